"""Where a runner puts its model: CUDA + bf16 when a GPU is visible, else CPU + float32.

With several GPUs, BentoML starts one LLM runner worker per GPU (runners.config.LLM_WORKERS) and every worker
sees all of them; each worker takes the GPU matching its worker index, so N GPUs hold N replicas.
"""

from __future__ import annotations

import os

import torch

import settings


def listed(visible: str) -> int:
    """How many GPUs a CUDA_VISIBLE_DEVICES value names (CUDA stops at "-1", the usual "none")."""
    ids = [d.strip() for d in visible.split(",") if d.strip()]
    return len(ids[: ids.index("-1")] if "-1" in ids else ids)


def _present() -> int:
    try:
        import pynvml  # nvidia-ml-py, a BentoML dependency

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver / no NVML: a CPU machine
        return 0


def gpu_count() -> int:
    """GPUs this process may use, without initialising CUDA (the serving parent must not).

    BentoML sets CUDA_VISIBLE_DEVICES=0 for a GPU-requesting worker even on a machine without GPUs,
    so the variable alone proves nothing: count what the driver has, capped by what is listed.
    """
    present = _present()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return present if visible is None else min(present, listed(visible))


def worker_gpu() -> int:
    """This worker's GPU: BentoML numbers workers from 1, one per GPU (round robin if more)."""
    from bentoml import server_context

    index = server_context.worker_index or 1
    return (index - 1) % max(1, torch.cuda.device_count())


def _dtype(s: settings.Settings, role: str | None, default: str) -> torch.dtype:
    """ASKDB_<ROLE>_DTYPE, else ASKDB_DTYPE, else `default`."""
    named = getattr(s, f"{role}_dtype") if role else ""
    return getattr(torch, named or s.dtype or default)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX, through oneDNN): Zen 4, Sapphire Rapids and later."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def wanted_device(s: settings.Settings, role: str | None) -> str:
    """ASKDB_<ROLE>_DEVICE (e.g. ASKDB_EMBED_DEVICE=cuda:1) over ASKDB_DEVICE for one runner."""
    return (getattr(s, f"{role}_device") if role else "") or s.device


def pick(role: str | None = None) -> tuple[torch.device, torch.dtype]:
    """The device `wanted_device` names (auto: this worker's GPU, else CPU); ASKDB_<ROLE>_DTYPE over
    ASKDB_DTYPE likewise. Read when the runner loads its model (a fresh read: tools set it first)."""
    s = settings.load()
    wanted = wanted_device(s, role)
    use_cuda = torch.cuda.is_available() if wanted == "auto" else wanted.startswith("cuda")
    if use_cuda:
        # bf16 halves the bytes read per decode step, and decode is memory-bound on GPUs
        dtype = _dtype(s, role, "bfloat16")
        return torch.device("cuda", worker_gpu()) if wanted == "auto" else torch.device(wanted), dtype
    # On a CPU the LLM stays float32: exact (bf16 generation there is unmeasured). The encoder's
    # pooled vectors barely move in bf16 (cosine 0.99995 to float32) and its batches run 2x faster
    # where the CPU has native bf16 (runners/README.md).
    return torch.device("cpu"), _dtype(
        s, role, "bfloat16" if role == "embed" and cpu_has_bf16() else "float32"
    )
