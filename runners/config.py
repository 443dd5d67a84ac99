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

# The LLM engine (runners/engine.py). Slots: requests decoded together, each with its own row of
# the KV cache. On a GPU a decode step costs about the same for 1 row as for 128 (memory-bound:
# docs/performance.md), so many; on 2 CPU cores 16 keep them busy without stretching each step.
LLM_SLOTS = _int("ASKDB_LLM_SLOTS", 128 if ON_GPU else 16)
# Positions per slot (prompt + new tokens), capped by the model's own context. A GPU allocates
# slots x context up front (bf16 1B Llama: 32 KiB a position, 128 x 4096 = 16 GiB); a CPU maps it
# and pays only for positions written, so it can offer the model's whole context.
LLM_MAX_CONTEXT = _int("ASKDB_LLM_MAX_CONTEXT", 4096 if ON_GPU else 8192)
# Prompt tokens prefilled per iteration, between two decode steps: the most a long prompt may stall
# running rows. A CPU prefills ~1k tokens/s for SmolLM2 on 2 cores, so 256 is a quarter second.
LLM_PREFILL_CHUNK = _int("ASKDB_LLM_PREFILL_CHUNK", 2048 if ON_GPU else 256)
# Requests waiting for a slot; past this the runner refuses at once (503 with Retry-After).
LLM_MAX_WAITING = _int("ASKDB_LLM_MAX_WAITING", 512)
# CUDA graphs for the decode step (one per slot and key-length bucket); no effect on a CPU.
LLM_GRAPHS = os.environ.get("ASKDB_LLM_GRAPHS", "1") == "1"
# torch.compile of the model's forward (one dynamic-shape compile for all buckets, under the CUDA
# graphs). Off: on the H200 (1B Llama) it took 208 s to compile and, though 21% faster for one
# row, was 59% slower at 64 rows than the graphs over the uncompiled model (docs/performance.md).
LLM_COMPILE = os.environ.get("ASKDB_LLM_COMPILE", "0") == "1"
# Where compiled kernels are kept between restarts (torch.compiler cache artifacts), so a restart
# loads them instead of compiling again; empty: no persistence.
LLM_COMPILE_CACHE = os.environ.get("ASKDB_LLM_COMPILE_CACHE", os.path.expanduser("~/.cache/askdb/compile"))
# Settle a step's tokens on the host while the device runs the next ("auto": on a GPU, where the
# host work for 64 rows costs about as much as the step; a row that ends is then known one step late).
LLM_OVERLAP = {"auto": None, "1": True, "0": False}[os.environ.get("ASKDB_LLM_OVERLAP", "auto")]
# Key lengths whose graphs are captured before the runner reports ready (longer ones on first use).
LLM_WARM_CONTEXT = _int("ASKDB_LLM_WARM_CONTEXT", 1024)
EMBED_MAX_BATCH_SIZE = _int("ASKDB_EMBED_MAX_BATCH_SIZE", 64)
EMBED_MAX_LATENCY_MS = _int("ASKDB_EMBED_MAX_LATENCY_MS", 10_000)

# LLM calls are long: BentoML's 60 s default would cut off a long generation.
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


# How callers keep their HTTP session to a runner. BentoML replaces it after 100 requests or 300 s
# and closes the old one under the requests still running on it: generations and streams in flight
# then fail ("Server disconnected", "Connector is closed."; 18 of 64 concurrent streams here). The
# runners sit behind a fixed local socket, so the session never needs replacing.
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 10.0**12}


def batching(max_batch_size: int, max_latency_ms: int) -> dict[str, object]:
    """`@bentoml.api` arguments; a max batch size of 1 turns adaptive batching off (BentoML itself
    refuses max_batch_size=1), which is what bench/batching.py compares against."""
    if max_batch_size <= 1:
        return {}
    return {"batchable": True, "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms}
