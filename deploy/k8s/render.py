"""Render a kustomization to Kubernetes objects: `python -m deploy.k8s.render deploy/k8s/overlays/gpu`.

Uses kustomize itself (the Go library kubectl embeds): through pykustomize's shared library when
installed (requirements/k8s.txt), else `kubectl kustomize` when kubectl is on PATH.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parent
OVERLAYS = ("cpu", "gpu", "spot")


def build(path: Path) -> str:
    try:
        import pykustomize
    except ImportError:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise RuntimeError("no kustomize: `make install` (pykustomize) or put kubectl on PATH") from None
        return subprocess.run(
            [kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True
        ).stdout
    return asyncio.run(pykustomize.build(str(path))).yaml


def render(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(build(path)) if doc]


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    target = Path(args[0]) if args else K8S / "overlays" / "cpu"
    sys.stdout.write(build(target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
