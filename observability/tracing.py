"""OpenTelemetry spans for askdb, exported by whatever BentoML's `tracing:` config names.

BentoML builds its own TracerProvider from the service config (exporter_type zipkin / jaeger / otlp,
sample_rate) and wraps every request in a server span; it does not install that provider globally.
`tracer()` hands out a tracer of that same provider, so askdb's spans share the configured exporter
and nest under the request span through the ambient OpenTelemetry context. Outside a BentoML
process (unit tests, scripts) it falls back to the global provider.

`SpanCallback` turns LangChain runnable runs (chains, LLM calls, retrievers) into child spans:
pass it in a runnable's `config={"callbacks": [SpanCallback()]}`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

_cache: dict[int, Tracer] = {}


def tracer() -> Tracer:
    pid = os.getpid()  # one per process: BentoML's provider is built per worker
    if pid not in _cache:
        try:
            from bentoml._internal.configuration.containers import BentoMLContainer

            provider = BentoMLContainer.tracer_provider.get()
        except Exception:  # not inside a configured BentoML process
            provider = trace.get_tracer_provider()
        _cache[pid] = provider.get_tracer("askdb")
    return _cache[pid]


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span of whatever is current; exceptions mark it as failed and propagate."""
    with tracer().start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    # OpenTelemetry accepts only primitives; drop None, stringify the rest
    out = {}
    for key, value in attributes.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return out


class SpanCallback(BaseCallbackHandler):
    """One span per LangChain run, parented like the runs (a run's parent run is its span's parent)."""

    run_inline = True  # called in the event loop itself: ordered, and with the request's context

    def __init__(self) -> None:
        self._spans: dict[UUID, Span] = {}

    def _start(self, name: str, run_id: UUID, parent_run_id: UUID | None, kind: str) -> None:
        parent = self._spans.get(parent_run_id) if parent_run_id else None
        ctx = trace.set_span_in_context(parent) if parent else otel_context.get_current()
        self._spans[run_id] = tracer().start_span(
            f"langchain.{name}", context=ctx, attributes={"langchain.run_type": kind}
        )

    def _end(self, run_id: UUID, error: BaseException | None = None) -> None:
        current = self._spans.pop(run_id, None)
        if current is None:
            return
        if error is not None:
            current.record_exception(error)
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
        current.end()

    @staticmethod
    def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
        if kwargs.get("name"):
            return str(kwargs["name"])
        if serialized:
            return str(serialized.get("name") or (serialized.get("id") or [default])[-1])
        return default

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kwargs) -> None:  # type: ignore[override]
        self._start(self._name(serialized, kwargs, "chain"), run_id, parent_run_id, "chain")

    def on_chain_end(self, outputs, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id)

    def on_chain_error(self, error, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id, error)

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, **kwargs) -> None:  # type: ignore[override]
        self._start(self._name(serialized, kwargs, "chat_model"), run_id, parent_run_id, "llm")

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kwargs) -> None:  # type: ignore[override]
        self._start(self._name(serialized, kwargs, "llm"), run_id, parent_run_id, "llm")

    def on_llm_end(self, response, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id)

    def on_llm_error(self, error, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id, error)

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, **kwargs) -> None:  # type: ignore[override]
        self._start(self._name(serialized, kwargs, "retriever"), run_id, parent_run_id, "retriever")

    def on_retriever_end(self, documents, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id)

    def on_retriever_error(self, error, *, run_id, **kwargs) -> None:  # type: ignore[override]
        self._end(run_id, error)
