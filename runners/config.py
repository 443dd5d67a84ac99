"""Runner tunables: the machine-dependent defaults of settings.py's table, decided here.

Reasons are in settings.py and runners/README.md; GPU values come from bench/gpu.
"""

from __future__ import annotations

import os

import settings
from runners import device


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


S = settings.get()
LLM_MODEL = S.llm_model
EMBED_MODEL = S.embed_model

# One runner worker per visible GPU (each takes its own, runners/device.py); one on a CPU machine.
GPUS = device.gpu_count()
ON_GPU = GPUS > 0 and device.wanted_device(S, "llm") != "cpu"  # the LLM engine's device decides its sizes

# The LLM engine (runners/engine.py). Slots: requests decoded together, each with its own row of
# the KV cache. On a GPU a decode step costs about the same for 1 row as for 128 (memory-bound:
# docs/performance.md), so many; on 2 CPU cores 16 keep them busy without stretching each step.
LLM_SLOTS = _or(S.llm_slots, 128 if ON_GPU else 16)
# Positions per slot (prompt + new tokens), capped by the model's own context. A GPU allocates
# slots x context up front (bf16 1B Llama: 32 KiB a position, 128 x 4096 = 16 GiB); a CPU maps it
# and pays only for positions written, so it can offer the model's whole context.
LLM_MAX_CONTEXT = _or(S.llm_max_context, 4096 if ON_GPU else 8192)
# Prompt tokens prefilled per iteration, between two decode steps: the most a long prompt may stall
# running rows. A CPU prefills ~1k tokens/s for SmolLM2 on 2 cores, so 256 is a quarter second.
LLM_PREFILL_CHUNK = _or(S.llm_prefill_chunk, 2048 if ON_GPU else 256)
# Requests waiting for a slot; past this the runner refuses at once (503 with Retry-After).
LLM_MAX_WAITING = S.llm_max_waiting
# CUDA graphs for the decode step (one per slot and key-length bucket); no effect on a CPU.
LLM_GRAPHS = S.llm_graphs
# torch.compile of the model's forward (one dynamic-shape compile for all buckets, under the CUDA
# graphs). Off: on the H200 (1B Llama) it took 208 s to compile and, though 21% faster for one
# row, was 59% slower at 64 rows than the graphs over the uncompiled model (docs/performance.md).
LLM_COMPILE = S.llm_compile
# Where compiled kernels are kept between restarts (torch.compiler cache artifacts), so a restart
# loads them instead of compiling again; empty: no persistence.
LLM_COMPILE_CACHE = os.path.expanduser(S.llm_compile_cache)
# Settle a step's tokens on the host while the device runs the next ("auto": on a GPU, where the
# device runs asynchronously; a row that ends is then known one step late).
LLM_OVERLAP = {"auto": None, "on": True, "off": False}[S.llm_overlap]
# Key lengths whose graphs are captured before the runner reports ready (longer ones on first use).
LLM_WARM_CONTEXT = S.llm_warm_context


def engine_settings() -> dict[str, object]:
    """runners/engine.py Engine's keyword arguments, from the values above."""
    return {
        "slots": LLM_SLOTS,
        "context": LLM_MAX_CONTEXT,
        "prefill_chunk": LLM_PREFILL_CHUNK,
        "max_waiting": LLM_MAX_WAITING,
        "graphs": LLM_GRAPHS,
        "compile": LLM_COMPILE,
        "overlap": LLM_OVERLAP,
    }


EMBED_MAX_BATCH_SIZE = S.embed_max_batch_size
EMBED_MAX_LATENCY_MS = S.embed_max_latency_ms

# LLM calls are long: BentoML's 60 s default would cut off a long generation.
LLM_TIMEOUT_S = S.llm_timeout_s
EMBED_TIMEOUT_S = S.embed_timeout_s
# GPU placement (check a plan with `python -m bench.gpu.placement --gpus N`). BentoML hands GPUs to
# services in order, embedding runner first: by default it asks for none and shares cuda:0 (a small
# encoder), and the LLM runner takes every GPU with one worker each (replicas). ASKDB_EMBED_GPUS=1
# ASKDB_LLM_GPUS=1 puts the embedder on GPU 0 and the LLM on GPU 1 instead.
EMBED_GPUS = S.embed_gpus
EMBED_RESOURCES = {"gpu": EMBED_GPUS} if EMBED_GPUS else {}  # BentoML refuses {"gpu": 0}
LLM_GPUS = _or(S.llm_gpus, max(1, GPUS - EMBED_GPUS))
LLM_WORKERS = _or(S.llm_workers, LLM_GPUS if ON_GPU else 1)
WORKERS = S.runner_workers  # embedding runner workers


# How callers keep their HTTP session to a runner. BentoML replaces it after 100 requests or 300 s
# and closes the old one under the requests still running on it: generations and streams in flight
# then fail ("Server disconnected", "Connector is closed."; 18 of 64 concurrent streams here). The
# runners sit behind a fixed local socket, so the session never needs replacing.
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 10.0**12}
