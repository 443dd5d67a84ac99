"""torch.compile's kernels kept across restarts: a runner that compiled once loads them next time.

`torch.compiler.save_cache_artifacts()` bundles what compiling produced (FX graphs, Triton kernels,
autotuning results); `load_cache_artifacts()` fills the caches from it before the next compile, so
the compile becomes a cache hit. One file per model, device, torch version and engine shape.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger("bentoml.askdb.llm")


def cache_file(folder: str, *parts: object) -> Path | None:
    if not folder:
        return None
    key = hashlib.sha256("|".join(map(str, (torch.__version__, *parts))).encode()).hexdigest()[:24]
    return Path(folder) / f"askdb-{key}.bin"


def load(path: Path | None) -> bool:
    """Fill torch's compile caches from `path`; False when there was nothing (usable) to load."""
    if path is None or not path.is_file():
        return False
    try:
        torch.compiler.load_cache_artifacts(path.read_bytes())
    except Exception as err:  # a stale or foreign file: compile from scratch, as without one
        log.warning("compile cache %s not used: %s", path, err)
        return False
    return True


def save(path: Path | None) -> None:
    """Write what this process compiled to `path` (atomically: workers may start together)."""
    if path is None:
        return
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(saved[0])
    tmp.replace(path)
