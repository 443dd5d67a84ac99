"""LLM engine hooks: token counts, queue wait, time to first token and per-token time per request.

The engine (runners/engine.py) calls `accepted` when a request enters and `finished` once when it
leaves (done, failed or cancelled), with wall-clock stamps it took itself, so the figures are exact
whether the consumer streamed, waited for the whole result or left early.
"""

from __future__ import annotations

from typing import Any

from observability import metrics


def _arrival(req: Any, default: float) -> float:
    """When the request was created by its client (GenRequest.submitted_at), else `default`."""
    stamp = getattr(req, "submitted_at", None)
    # clocks of two hosts may disagree a little: never report time travel
    return min(stamp, default) if stamp else default


def accepted(model: str, provider: str = metrics.LOCAL_PROVIDER) -> None:
    metrics.inflight.labels(model=model, provider=provider).inc()


def finished(
    model: str,
    req: Any,
    *,
    prompt: int,
    completion: int,
    reason: str,
    received: float,
    slot: float | None,
    first: float | None,
    done: float,
    counted: bool = True,
    provider: str = metrics.LOCAL_PROVIDER,
) -> None:
    """Record one request; stamps are time.time(). `counted`: it was `accepted` (in flight)."""
    labels = {"model": model, "provider": provider}
    arrival = _arrival(req, received)
    if counted:
        metrics.inflight.labels(**labels).dec()
    if slot is not None:
        metrics.queue_wait.labels(**labels).observe(max(0.0, slot - arrival))
    metrics.record_generation(
        **labels,
        prompt=prompt,
        completion=completion,
        finish_reason=reason,
        ttft_s=(first - arrival) if first is not None else None,
        decode_s=(done - first) if first is not None else None,
    )
