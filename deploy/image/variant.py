"""Derive a flavour of bentofile.yaml: the checked-in file is the CPU flavour on the standard path.

    python deploy/image/variant.py --flavour cuda [--base-image localhost/askdb-base:...] --out FILE

One source of truth for what goes into the Bento; the flavours differ only in how torch is installed
(and so in what the image needs at run time), the paths only in the image the Dockerfile starts FROM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TORCH_VERSION = "2.13.0"
# Read by the NVIDIA container toolkit (`--gpus all`, Kubernetes `nvidia.com/gpu`).
CUDA_ENVS = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


def _set_env(config: dict, name: str, value: str) -> None:
    envs = [e for e in config.setdefault("envs", []) if e["name"] != name]
    config["envs"] = [*envs, {"name": name, "value": value}]


def to_cuda(config: dict) -> dict:
    """PyPI's torch *is* the CUDA build (CUDA runtime in nvidia-* wheels), so no CUDA base image."""
    python = config["python"]
    python["packages"] = [
        f"torch=={TORCH_VERSION}" if p.startswith("./wheels/torch-") else p for p in python["packages"]
    ]
    python.pop("wheels", None)
    config["labels"]["flavour"] = "cuda"
    for name, value in CUDA_ENVS.items():
        _set_env(config, name, value)
    return config


def derive(config: dict, flavour: str, base_image: str | None) -> dict:
    if flavour == "cuda":
        config = to_cuda(config)
    elif flavour != "cpu":
        raise ValueError(f"flavour must be cpu or cuda, not {flavour!r}")
    if base_image:
        config.setdefault("docker", {})["base_image"] = base_image
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--base-image", default=None, help="FROM image (default: bentofile.yaml's)")
    parser.add_argument("--source", type=Path, default=ROOT / "bentofile.yaml")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = derive(yaml.safe_load(args.source.read_text()), args.flavour, args.base_image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(config, sort_keys=False))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
