"""LLM runner hooks: token counts, queue wait, time to first token and per-token time per batch.

`BatchMeter` rides along `model.generate` as a stopping criterion that never stops anything: HF
calls every criterion once per decoding step, right after the step's token is chosen, so its first
call is the moment the first token exists. Every row of a batch gets its first token at that same
step, and decode steps are shared, so per-token time is the batch's step time.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import torch
from transformers import StoppingCriteria

from observability import metrics


def _arrival(req: Any, default: float) -> float:
    """When the request was created by its client (GenRequest.submitted_at), else `default`."""
    stamp = getattr(req, "submitted_at", None)
    # clocks of two hosts may disagree a little: never report time travel
    return min(stamp, default) if stamp else default


class BatchMeter(StoppingCriteria):
    def __init__(self, model: str, requests: Sequence[Any], provider: str = metrics.LOCAL_PROVIDER):
        self.labels = {"model": model, "provider": provider}
        self.start = time.time()
        self.arrivals = [_arrival(r, self.start) for r in requests]
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def __enter__(self) -> BatchMeter:
        for arrival in self.arrivals:
            metrics.queue_wait.labels(**self.labels).observe(self.start - arrival)
        metrics.inflight.labels(**self.labels).inc(len(self.arrivals))
        return self

    def __exit__(self, *exc: object) -> None:
        metrics.inflight.labels(**self.labels).dec(len(self.arrivals))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.steps += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def finish(self, results: Sequence[Any]) -> None:
        """Record each result (GenResult-like: prompt_tokens, completion_tokens, finish_reason)."""
        step = None
        if self.first is not None and self.last is not None and self.steps > 1:
            step = (self.last - self.first) / (self.steps - 1)
        for arrival, res in zip(self.arrivals, results, strict=True):
            produced = res.completion_tokens > 0 and self.first is not None
            metrics.record_generation(
                **self.labels,
                prompt=res.prompt_tokens,
                completion=res.completion_tokens,
                finish_reason=res.finish_reason,
                ttft_s=(self.first - arrival) if produced else None,
                decode_s=step * (res.completion_tokens - 1) if step is not None and produced else None,
            )


async def metered_stream(
    events: AsyncIterator[Any], model: str, request: Any, provider: str = metrics.LOCAL_PROVIDER
) -> AsyncIterator[Any]:
    """Pass stream events through, timing the first text and counting tokens from the last event.

    Events look like runners.streaming.StreamEvent: `text`, and on the last one `finish_reason`,
    `prompt_tokens`, `completion_tokens`.
    """
    labels = {"model": model, "provider": provider}
    start = time.time()
    arrival = _arrival(request, start)
    metrics.queue_wait.labels(**labels).observe(start - arrival)
    first: float | None = None
    metrics.inflight.labels(**labels).inc()
    try:
        async for event in events:
            if first is None and event.text:
                first = time.time()
            if event.finish_reason is not None:
                metrics.record_generation(
                    **labels,
                    prompt=event.prompt_tokens,
                    completion=event.completion_tokens,
                    finish_reason=event.finish_reason,
                    ttft_s=(first - arrival) if first is not None else None,
                    decode_s=(time.time() - first) if first is not None else None,
                )
            yield event
    finally:
        metrics.inflight.labels(**labels).dec()
