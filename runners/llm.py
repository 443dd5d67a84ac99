"""The LLM runner: one stored causal LM behind a batchable BentoML API.

Serve alone with `bentoml serve runners.llm:LLM`; the model tag is ASKDB_LLM_MODEL, and
ASKDB_LLM_SCHEDULER picks how /generate shares the model (runners/config.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import bentoml

from observability.llm_meter import BatchMeter, metered_stream
from runners import config
from runners.generation import Generator
from runners.schemas import GenRequest, GenResult, ModelInfo
from runners.streaming import StreamEngine, stream_events

CONTINUOUS = config.LLM_SCHEDULER == "continuous"


@bentoml.service(
    name="askdb-llm",
    resources={"gpu": config.LLM_GPUS},  # all visible GPUs; one worker each (runners/device.py)
    workers=config.LLM_WORKERS,
    traffic={"timeout": config.LLM_TIMEOUT_S},
    labels={"component": "llm-runner", "owner": "askdb"},
)
class LLM:
    model = bentoml.models.BentoModel(config.LLM_MODEL)

    def __init__(self) -> None:
        self.engine = Generator.load(self.model.path)
        self.meta = self.model.info.metadata
        self.streams = StreamEngine(self.engine, max_streams=config.LLM_MAX_STREAMS)
        self.tag = str(self.model.tag)  # the `model` label of askdb_llm_* metrics
        self._batch_lock = asyncio.Lock()

    def _batch(self, requests: list[GenRequest]) -> list[GenResult]:
        with BatchMeter(self.tag, requests) as meter:
            results = self.engine.generate(requests, hooks=[meter])
            meter.finish(results)
        return results

    # The scheduler is chosen when the class is defined, since BentoML reads `batchable` from the
    # decorator; either way the API takes and returns lists, so callers never see the difference.
    if CONTINUOUS:

        @bentoml.api
        async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
            """Each request joins the running decode loop (runners/streaming.py) on its own."""
            return list(await asyncio.gather(*(self._join_loop(r) for r in requests)))

    else:

        @bentoml.api(**config.batching(config.LLM_MAX_BATCH_SIZE, config.LLM_MAX_LATENCY_MS))
        def generate(self, requests: list[GenRequest]) -> list[GenResult]:
            return self._batch(requests)

    async def _join_loop(self, req: GenRequest) -> GenResult:
        if req.grammar is not None:
            # the step loop has no grammar masks; one batch-path call at a time, as under "batch"
            async with self._batch_lock:
                [result] = await asyncio.to_thread(self._batch, [req])
            return result
        text: list[str] = []
        async for event in metered_stream(stream_events(self.streams, req), self.tag, req):
            text.append(event.text)
            if event.finish_reason is not None:
                return GenResult(
                    text="".join(text),
                    finish_reason=event.finish_reason,  # type: ignore[arg-type]
                    prompt_tokens=event.prompt_tokens,
                    completion_tokens=event.completion_tokens,
                    error=event.error,
                )
        raise RuntimeError("the stream ended without a final event")

    @bentoml.api
    async def stream(self, job: GenRequest) -> AsyncGenerator[str, None]:
        """Newline-delimited StreamEvent JSON as tokens are produced (continuous batching, see
        runners/streaming.py); the client closing the response cancels the generation."""
        async for event in metered_stream(stream_events(self.streams, job), self.tag, job):
            yield event.model_dump_json(exclude_defaults=True) + "\n"

    @bentoml.api
    def info(self) -> ModelInfo:
        return ModelInfo(
            tag=str(self.model.tag),
            task="text-generation",
            architecture=str(self.meta.get("architecture", "")),
            device=str(self.engine.device),
            dtype=str(self.engine.model.dtype).removeprefix("torch."),
            context_length=self.engine.context_length,
            max_batch_size=config.LLM_MAX_STREAMS if CONTINUOUS else config.LLM_MAX_BATCH_SIZE,
            scheduler=config.LLM_SCHEDULER,
        )
