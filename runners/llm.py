"""The LLM runner: one stored causal LM behind askdb's engine (runners/engine.py).

Serve alone with `bentoml serve runners.llm:LLM`; the model tag is ASKDB_LLM_MODEL and the engine's
tunables are in runners/config.py. Every entry point (`generate`, `stream`) joins the same
continuous-batching loop; `cancel` frees the rows of requests whose clients left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator

import bentoml

from runners import config, engine
from runners.model import LoadedModel
from runners.schemas import GenRequest, GenResult, ModelInfo

log = logging.getLogger("bentoml.askdb.llm")


@bentoml.service(
    name="askdb-llm",
    resources={"gpu": config.LLM_GPUS},  # all visible GPUs; one worker each (runners/device.py)
    workers=config.LLM_WORKERS,
    traffic={"timeout": config.LLM_TIMEOUT_S},
    runner_connection=config.RUNNER_CONNECTION,
    labels={"component": "llm-runner", "owner": "askdb"},
)
class LLM:
    model = bentoml.models.BentoModel(config.LLM_MODEL)

    def __init__(self) -> None:
        started = time.perf_counter()
        self.lm = LoadedModel.load(self.model.path)
        self.meta = self.model.info.metadata
        self.tag = str(self.model.tag)  # the `model` label of askdb_llm_* metrics
        self.engine = engine.from_loaded(self.lm, tag=self.tag)
        ready = self.engine.warm_up(config.LLM_WARM_CONTEXT, config.LLM_COMPILE_CACHE)
        log.info(
            "LLM engine ready in %.1f s: %d slots x %d positions on %s, compiled: %s, %d decode graphs",
            time.perf_counter() - started,
            self.engine.slots,
            self.engine.context,
            self.lm.device,
            ready["compiled"],
            ready["graphs"],
        )

    @bentoml.api
    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Each request joins the running decode loop on its own; one result per request."""
        return list(await asyncio.gather(*(self.engine.generate(r) for r in requests)))

    @bentoml.api
    async def stream(self, job: GenRequest) -> AsyncGenerator[str, None]:
        """Newline-delimited StreamEvent JSON as tokens are produced; every event carries the token
        counts so far. Closing the response (or `cancel`) frees the row at the next step."""
        async with contextlib.aclosing(self.engine.stream(job)) as events:
            async for event in events:
                yield event.model_dump_json(exclude_defaults=True) + "\n"

    @bentoml.api
    def cancel(self, ids: list[str]) -> int:
        """Stop these requests (their clients left); returns how many were still queued or running."""
        return self.engine.cancel(ids)

    @bentoml.api
    def info(self) -> ModelInfo:
        return ModelInfo(
            tag=self.tag,
            task="text-generation",
            architecture=str(self.meta.get("architecture", "")),
            device=str(self.lm.device),
            dtype=str(self.lm.dtype).removeprefix("torch."),
            context_length=self.engine.context,
            max_batch_size=self.engine.slots,
            scheduler="continuous",
            max_context=self.engine.context,
        )
