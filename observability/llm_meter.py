"""LLM engine hooks: token counts, queue wait, time to first token and per-token time per request.

The engine (runners/engine.py) calls `accepted` when a request enters and `finished` once when it
leaves (done, failed or cancelled), with wall-clock stamps it took itself, so the figures are exact
whether the consumer streamed, waited for the whole result or left early. Per tenant (the API key's
name): rows held and requests waiting (`tenants`, each iteration) and tokens served (`finished`).
"""

from __future__ import annotations

from typing import Any

from observability import metrics
from observability import vllm_metrics as vllm


def _arrival(req: Any, default: float) -> float:
    """When the request was created by its client (GenRequest.submitted_at), else `default`."""
    stamp = getattr(req, "submitted_at", None)
    # clocks of two hosts may disagree a little: never report time travel
    return min(stamp, default) if stamp else default


MAX_TENANTS = 64  # label values; the service sends configured key names only, this is the backstop
OTHER = "other"
_named: set[str] = set()


def tenant_label(name: str) -> str:
    if name in _named or len(_named) < MAX_TENANTS:
        _named.add(name)
        return name
    return OTHER


def tenants(snapshot: dict[str, tuple[int, int]]) -> None:
    """Rows held and requests waiting per tenant (runners/admission.py's snapshot)."""
    for name, (rows, queued) in snapshot.items():
        label = tenant_label(name)
        metrics.tenant_rows.labels(tenant=label).set(rows)
        metrics.tenant_queued.labels(tenant=label).set(queued)


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
    tenant = getattr(req, "tenant", None)
    if tenant is not None and counted:
        label = tenant_label(tenant.name)
        metrics.tenant_tokens.labels(tenant=label, kind="prompt").inc(prompt)
        metrics.tenant_tokens.labels(tenant=label, kind="completion").inc(completion)
    if slot is not None:
        metrics.queue_wait.labels(**labels).observe(max(0.0, slot - arrival))
    if provider == metrics.LOCAL_PROVIDER:
        _vllm(model, prompt, completion, reason, arrival, slot, first, done)
    metrics.record_generation(
        **labels,
        prompt=prompt,
        completion=completion,
        finish_reason=reason,
        ttft_s=(first - arrival) if first is not None else None,
        decode_s=(done - first) if first is not None else None,
    )


def _vllm(
    model: str, prompt: int, completion: int, reason: str,
    arrival: float, slot: float | None, first: float | None, done: float,
) -> None:  # fmt: skip
    """The same request under vLLM's names (observability/vllm_metrics.py)."""
    labels = {"model_name": model}
    vllm.prompt_tokens.labels(**labels).inc(prompt)
    vllm.generation_tokens.labels(**labels).inc(completion)
    vllm.request_success.labels(**labels, finished_reason=vllm.REASONS.get(reason, "error")).inc()
    vllm.e2e_latency.labels(**labels).observe(max(0.0, done - arrival))
    if slot is not None:
        vllm.queue_time.labels(**labels).observe(max(0.0, slot - arrival))
    if first is None:
        return
    vllm.time_to_first_token.labels(**labels).observe(max(0.0, first - arrival))
    if completion > 1:
        gap = max(0.0, done - first) / (completion - 1)
        vllm.time_per_output_token.labels(**labels).observe(gap)
        itl = vllm.inter_token_latency.labels(**labels)
        for _ in range(completion - 1):
            itl.observe(gap)


def engine_state(model: str, running: int, waiting: int, positions_used: int, positions: int) -> None:
    """After each engine iteration: rows running, requests waiting, KV positions in use."""
    metrics.engine_rows.set(running)
    metrics.engine_waiting.set(waiting)
    vllm.running.labels(model_name=model).set(running)
    vllm.waiting.labels(model_name=model).set(waiting)
    vllm.kv_cache_usage.labels(model_name=model).set(positions_used / positions if positions else 0.0)
