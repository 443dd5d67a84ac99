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


def _device_step_ms(engine: Engine, batch: int, positions: int) -> float | None:
    """The decode step alone (graph replays back to back, no host work between): what a step
    costs the device, against which the engine's wall time per step shows the host's share."""
    if engine.lm.device.type != "cuda":
        return None
    from runners.sampling import Variant

    mid = positions - positions // 4  # keys a step attends, on average over a request's life
    for _ in range(3):
        engine.step.decode(batch, mid, Variant())
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        engine.step.decode(batch, mid, Variant())
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 50


def measure(
    engine: Engine, prompt: str, new_tokens: int, batches: list[int], reps: int
) -> list[dict[str, Any]]:
    """Per batch size: wall time of one batch of requests submitted together (median of reps) and
    the prefill-only time (one new token each)."""
    rows = []
    device = engine.lm.device
    prompt_len = len(engine.lm.tokenizer.encode(prompt))
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
                "device_step_ms": _device_step_ms(engine, batch, prompt_len + new_tokens),
                "latency_s": wall,
                "prefill_s": prefill,
                "tokens_per_s": tokens / wall,
                "requests_per_s": batch / wall,
                "peak_mem_gib": _peak_gib(device),
            }
        )
        step = rows[-1]["device_step_ms"]
        alone = f"  device step alone {step:.2f} ms vs {1000 * wall / new_tokens:.2f} ms" if step else ""
        print(f"  in-process batch {batch:4d}: {tokens / wall:9.1f} tok/s  {wall:6.2f} s{alone}", flush=True)
    return rows
