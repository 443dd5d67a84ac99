"""Runner tunables, read from the environment when a runner process imports its module.

Defaults and the reasons for them are in runners/README.md; GPU values come from bench/gpu.
"""

from __future__ import annotations

import os

from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG
from runners import device


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


LLM_MODEL = os.environ.get("ASKDB_LLM_MODEL", DEFAULT_LLM_TAG)
EMBED_MODEL = os.environ.get("ASKDB_EMBED_MODEL", DEFAULT_EMBED_TAG)

# One runner worker per visible GPU (each takes its own, runners/device.py); one on a CPU machine.
GPUS = device.gpu_count()
ON_GPU = GPUS > 0 and os.environ.get("ASKDB_DEVICE", "auto") != "cpu"

# Generation takes seconds, so the batcher may hold a request a while to fill a batch; 16 rows keep
# a 2-core CPU busy without stretching one call past the request timeout. On a GPU a decode step
# costs about the same for 1 row as for 128 (H100, docs/performance.md: 1B shape in-process
# 259 tok/s at 1 row, 10.3k at 64, 14.6k at 128), so the largest measured batch wins.
LLM_MAX_BATCH_SIZE = _int("ASKDB_LLM_MAX_BATCH_SIZE", 128 if ON_GPU else 16)
# Open token streams decoded together in one step loop (runners/streaming.py); more wait their turn.
LLM_MAX_STREAMS = _int("ASKDB_LLM_MAX_STREAMS", 32)
# How /generate schedules its work. "batch": BentoML's adaptive batches, each run to its end by
# `model.generate` (static cache + CUDA graphs on a GPU). A request that arrives while a batch runs
# waits for all of it, so closed-loop clients fall into groups that take turns (docs/performance.md).
# "continuous": each request joins the stream engine's step loop between two decode steps, and
# leaves it when done (eager decoding; requests with a grammar still take the batch path).
# "batch" stays the default until the GPU comparison (bench/gpu, variant "continuous") is made.
SCHEDULERS = ("batch", "continuous")
LLM_SCHEDULER = os.environ.get("ASKDB_LLM_SCHEDULER", "batch")
if LLM_SCHEDULER not in SCHEDULERS:
    raise ValueError(f"ASKDB_LLM_SCHEDULER={LLM_SCHEDULER!r}: use one of {', '.join(SCHEDULERS)}")
LLM_MAX_LATENCY_MS = _int("ASKDB_LLM_MAX_LATENCY_MS", 300_000)
EMBED_MAX_BATCH_SIZE = _int("ASKDB_EMBED_MAX_BATCH_SIZE", 64)
EMBED_MAX_LATENCY_MS = _int("ASKDB_EMBED_MAX_LATENCY_MS", 10_000)

# LLM calls are long: BentoML's 60 s default would cut off a busy batch.
LLM_TIMEOUT_S = _int("ASKDB_LLM_TIMEOUT_S", 600)
EMBED_TIMEOUT_S = _int("ASKDB_EMBED_TIMEOUT_S", 60)
# GPU placement (check a plan with `python -m bench.gpu.placement --gpus N`). BentoML hands GPUs to
# services in order, embedding runner first: by default it asks for none and shares cuda:0 (a small
# encoder), and the LLM runner takes every GPU with one worker each (replicas). ASKDB_EMBED_GPUS=1
# ASKDB_LLM_GPUS=1 puts the embedder on GPU 0 and the LLM on GPU 1 instead.
EMBED_GPUS = _int("ASKDB_EMBED_GPUS", 0)
EMBED_RESOURCES = {"gpu": EMBED_GPUS} if EMBED_GPUS else {}  # BentoML refuses {"gpu": 0}
LLM_GPUS = _int("ASKDB_LLM_GPUS", max(1, GPUS - EMBED_GPUS))
LLM_WORKERS = _int("ASKDB_LLM_WORKERS", LLM_GPUS if ON_GPU else 1)
WORKERS = _int("ASKDB_RUNNER_WORKERS", 1)  # embedding runner workers

# KV cache: "dynamic" (grows per step) or "static" (preallocated; needed for compile / CUDA graphs).
# Eager decoding on a GPU is bound by kernel launches (~31 ms a step for SmolLM2's 30 layers on an
# H100 at any batch size); torch.compile with CUDA graphs over a static cache made the 1B shape 4.4x
# faster served at 1 client and 5.7x at 64 (docs/performance.md). A static cache alone, without
# compile, measured slower than dynamic (padding), so the two go together. Off on CPUs: unmeasured.
LLM_CACHE = os.environ.get("ASKDB_LLM_CACHE", "static" if ON_GPU else "dynamic")
LLM_COMPILE = os.environ.get("ASKDB_LLM_COMPILE", "1" if ON_GPU else "0") == "1"
# A cold compile costs on the order of a minute per batch bucket on the H100, so the runner compiles
# every bucket before it reports ready; ASKDB_LLM_WARMUP=0 trades that for slow first requests.
LLM_WARMUP = os.environ.get("ASKDB_LLM_WARMUP", "1") == "1"
# Static-cache buckets: prompt widths rounded up to 64 tokens, cache lengths to 256, so one compiled
# graph serves many request shapes.
LLM_PAD_MULTIPLE = _int("ASKDB_LLM_PAD_MULTIPLE", 64)
LLM_CACHE_MULTIPLE = _int("ASKDB_LLM_CACHE_MULTIPLE", 256)


def batching(max_batch_size: int, max_latency_ms: int) -> dict[str, object]:
    """`@bentoml.api` arguments; a max batch size of 1 turns adaptive batching off (BentoML itself
    refuses max_batch_size=1), which is what bench/batching.py compares against."""
    if max_batch_size <= 1:
        return {}
    return {"batchable": True, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}
