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

# Generation takes seconds, so the batcher may hold a request a while to fill a batch; 16 rows keep
# a 2-core CPU busy without stretching one call past the request timeout.
LLM_MAX_BATCH_SIZE = _int("ASKDB_LLM_MAX_BATCH_SIZE", 16)
# Open token streams decoded together in one step loop (runners/streaming.py); more wait their turn.
LLM_MAX_STREAMS = _int("ASKDB_LLM_MAX_STREAMS", 32)
LLM_MAX_LATENCY_MS = _int("ASKDB_LLM_MAX_LATENCY_MS", 300_000)
EMBED_MAX_BATCH_SIZE = _int("ASKDB_EMBED_MAX_BATCH_SIZE", 64)
EMBED_MAX_LATENCY_MS = _int("ASKDB_EMBED_MAX_LATENCY_MS", 10_000)

# LLM calls are long: BentoML's 60 s default would cut off a busy batch.
LLM_TIMEOUT_S = _int("ASKDB_LLM_TIMEOUT_S", 600)
EMBED_TIMEOUT_S = _int("ASKDB_EMBED_TIMEOUT_S", 60)
# One runner worker per visible GPU (each takes its own, runners/device.py); one on a CPU machine.
GPUS = device.gpu_count()
WORKERS = _int("ASKDB_RUNNER_WORKERS", max(1, GPUS))
LLM_GPUS = _int("ASKDB_LLM_GPUS", max(1, GPUS))

# KV cache: "dynamic" (grows per step) or "static" (preallocated; needed for compile / CUDA graphs).
LLM_CACHE = os.environ.get("ASKDB_LLM_CACHE", "dynamic")
LLM_COMPILE = os.environ.get("ASKDB_LLM_COMPILE", "0") == "1"
LLM_WARMUP = os.environ.get("ASKDB_LLM_WARMUP", "1") == "1"  # compile every batch bucket at start
# Static-cache buckets: prompt widths rounded up to 64 tokens, cache lengths to 256, so one compiled
# graph serves many request shapes.
LLM_PAD_MULTIPLE = _int("ASKDB_LLM_PAD_MULTIPLE", 64)
LLM_CACHE_MULTIPLE = _int("ASKDB_LLM_CACHE_MULTIPLE", 256)
