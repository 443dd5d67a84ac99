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


def test_cuda_visible_devices_is_read_as_cuda_does() -> None:
    assert device.listed("2,3") == 2
    assert device.listed("0,-1,1") == 1
    assert device.listed("") == 0


def test_a_listed_gpu_the_machine_lacks_is_not_counted(monkeypatch) -> None:
    # what BentoML hands a GPU-requesting worker on a CPU-only machine (this one)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert device.gpu_count() == 0
