"""Baseline (b): the runner's own engine called in-process with whole batches, no serving."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from bench.gpu.workload import request
from runners.engine import Engine


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _timed(engine: Engine, reqs: list) -> tuple[float, int]:
    t0 = time.perf_counter()
    results = engine.run(reqs)  # returns once every token is on the host
    return time.perf_counter() - t0, sum(r.completion_tokens for r in results)


def measure(
    engine: Engine, prompt: str, new_tokens: int, batches: list[int], reps: int
) -> list[dict[str, Any]]:
    """Per batch size: wall time of one batch of requests submitted together (median of reps) and
    the prefill-only time (one new token each)."""
    rows = []
    device = engine.lm.device
    for batch in [b for b in batches if b <= engine.slots]:
        reqs = [request(prompt, new_tokens) for _ in range(batch)]
        first = [request(prompt, 1) for _ in range(batch)]
        _timed(engine, reqs)  # warm-up: allocator growth, kernels picked, graphs compiled for this shape
        _timed(engine, first)
        runs = [_timed(engine, reqs) for _ in range(reps)]
        prefill = statistics.median(_timed(engine, first)[0] for _ in range(reps))
        wall = statistics.median(t for t, _ in runs)
        tokens = runs[0][1]
        if tokens != batch * new_tokens:
            raise RuntimeError(f"batch {batch}: {tokens} tokens generated, expected {batch * new_tokens}")
        rows.append(
            {
                "batch": batch,
                "latency_s": wall,
                "prefill_s": prefill,
                "tokens_per_s": tokens / wall,
                "requests_per_s": batch / wall,
                "peak_mem_gib": _peak_gib(device),
            }
        )
        print(f"  in-process batch {batch:4d}: {tokens / wall:9.1f} tok/s  {wall:6.2f} s", flush=True)
    return rows
