"""GPU placement plans from configuration alone, through BentoML's own allocator (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys

from runners import device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plan(gpus: int, **env: str) -> list[str]:
    drop = ("ASKDB_", "CUDA_VISIBLE_DEVICES")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.gpu.placement", "--gpus", str(gpus)],
        cwd=ROOT,
        env={**clean, "BENTOML_DO_NOT_TRACK": "true", **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if "worker" in line]


def test_one_llm_replica_per_gpu_by_default() -> None:
    rows = _plan(2)
    llm = [r for r in rows if r.startswith("askdb-llm")]
    assert [r.split("-> ")[1] for r in llm] == ["cuda:0 = physical GPU 0", "cuda:1 = physical GPU 1"]


def test_embedder_and_llm_on_separate_gpus_from_config() -> None:
    rows = _plan(2, ASKDB_EMBED_GPUS="1", ASKDB_LLM_GPUS="1")
    assert any(r.startswith("askdb-embedding") and r.endswith("physical GPU 0") for r in rows)
    assert [r for r in rows if r.startswith("askdb-llm")] == [
        "askdb-llm        worker 1: CUDA_VISIBLE_DEVICES=1 -> cuda:0 = physical GPU 1"
    ]


def test_gpu_count_follows_cuda_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert device.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,-1,1")
    assert device.gpu_count() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.gpu_count() == 0
