"""Where a runner puts its model: CUDA + bf16 when a GPU is visible, else CPU + float32."""

from __future__ import annotations

import os

import torch


def pick() -> tuple[torch.device, torch.dtype]:
    wanted = os.environ.get("ASKDB_DEVICE", "auto")
    use_cuda = torch.cuda.is_available() if wanted == "auto" else wanted.startswith("cuda")
    if use_cuda:
        # bf16 halves the bytes read per decode step, and decode is memory-bound on GPUs
        dtype = getattr(torch, os.environ.get("ASKDB_DTYPE", "bfloat16"))
        return torch.device("cuda" if wanted == "auto" else wanted), dtype
    # CPUs here lack fast bf16 matmuls; float32 is both faster and exact
    return torch.device("cpu"), getattr(torch, os.environ.get("ASKDB_DTYPE", "float32"))
