"""The memory-bandwidth roofline for decoding: every step reads all weights plus the KV cache.

tokens/s <= batch x bandwidth / (weight bytes + KV bytes read per step), with the bandwidth measured
on this device by a large device-to-device copy (bytes read + bytes written).
"""

from __future__ import annotations

import statistics
import time

import torch


def copy_bandwidth(device: str, gib: float = 1.0, reps: int = 20) -> float:
    """Bytes/s of a device-to-device copy: the practical ceiling for streaming weights."""
    n = int(gib * (1 << 30)) // 2
    src = torch.randn(n, dtype=torch.bfloat16, device=device)  # never time on zeros
    dst = torch.empty_like(src)
    times = []
    for i in range(reps + 3):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            elapsed = time.perf_counter() - t0
        if i >= 3:  # warm-up copies excluded
            times.append(elapsed)
    if not torch.equal(dst[:1024], src[:1024]):
        raise RuntimeError("copy check failed")
    return 2 * src.numel() * src.element_size() / statistics.median(times)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of distinct parameters (a tied embedding/LM head counts once: the head reads it all)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def tokens_per_s(batch: int, bandwidth: float, weights: int, kv_per_token: int, mean_context: float) -> float:
    step_bytes = weights + batch * mean_context * kv_per_token
    return batch * bandwidth / step_bytes
