"""One /ask, observed: metrics and the quality-log record when it finishes.

The /ask handler makes one `AskObservation` per request; the chain's callback (api/ask.py
StageTimer) adds each step's time to `stages`, and the handler ends it once:

    obs = AskObservation(question, db, model=tag)
    obs.finish("ok", sql=sql, attempts=2, row_count=len(rows), prompt_tokens=..., model="remote/local")

`model` names the models that answered as pipeline/generate.py's `Usage.models` does: a provider's
as `provider/model`, the local runner's by its tag; the log's `provider` field comes from it.
`request_id` is the trace id of the request's span when tracing records one, so a log record and
its trace share an id; otherwise a fresh UUID.
"""

from __future__ import annotations

import time

from opentelemetry import trace

from observability import metrics
from observability.quality_log import QualityLog, new_request_id

_log: QualityLog | None = None


def quality_log() -> QualityLog:
    global _log
    if _log is None:
        _log = QualityLog.from_env()
    return _log


def answering_provider(model: str) -> str:
    """The provider(s) behind a `model` as /ask reports it ("remote/local, smollm2-...:latest"):
    the part before the first "/" of each name, else the local runner (a store tag has no "/")."""
    names = [n.strip() for n in model.split(",") if n.strip()]
    found = [n.split("/", 1)[0] if "/" in n else metrics.LOCAL_PROVIDER for n in names]
    return ", ".join(dict.fromkeys(found)) or metrics.LOCAL_PROVIDER


def _request_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else new_request_id()


class AskObservation:
    def __init__(self, question: str, db: str, model: str | None = None):
        self.question, self.db, self.model = question, db, model
        self.request_id = _request_id()
        self.started = time.perf_counter()
        self.stages: dict[str, float] = {}
        self.finished = False

    def finish(
        self,
        outcome: str,
        *,
        sql: str | None = None,
        attempts: int = 0,
        row_count: int | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        error: str | None = None,
        model: str | None = None,
    ) -> float:
        """Record metrics and the log line once; returns the latency in milliseconds."""
        latency_s = time.perf_counter() - self.started
        if self.finished:
            return latency_s * 1000
        self.finished = True
        model = model or self.model or "unknown"
        metrics.record_ask(outcome, model, attempts, row_count, latency_s, self.stages)
        quality_log().ask(
            request_id=self.request_id,
            question=self.question,
            db=self.db,
            model=model,
            provider=answering_provider(model),
            sql=sql,
            outcome=outcome,
            attempts=attempts,
            row_count=row_count,
            latency_ms=round(latency_s * 1000, 2),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            error=error,
            stages_ms={k: round(v * 1000, 2) for k, v in self.stages.items()},
        )
        return latency_s * 1000


def record_feedback(request_id: str, score: float, comment: str | None = None) -> None:
    metrics.feedback.observe(score)
    quality_log().feedback(request_id, score, comment)
