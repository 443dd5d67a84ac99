"""Tracing end to end: a real `bentoml serve` with the shipped observability/tracing.yaml exports
OTLP/HTTP spans to a real receiver (tests/otlp_receiver.py); one /ask must arrive as one trace:
the request's server span, the chain's steps below it, and the LLM runner's span (another process)
joined through the propagated trace context. The /ask's quality-log record carries its trace id.

An in-memory exporter cannot see spans of other processes, so this test uses the OTLP receiver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from observability.quality_log import joined_asks
from tests.conftest import TEST_ENV
from tests.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.servers import ROOT, BentoServer


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> Iterator[tuple[BentoServer, OTLPReceiver, Path]]:
    logs = tmp_path_factory.mktemp("quality")
    with OTLPReceiver() as receiver:
        env = {
            **TEST_ENV,
            "BENTOML_CONFIG": str(ROOT / "observability" / "tracing.yaml"),
            "ASKDB_OTLP_ENDPOINT": receiver.endpoint,
            "ASKDB_QUALITY_LOG_DIR": str(logs),
        }
        with BentoServer("service:AskDB", env=env) as server:
            yield server, receiver, logs


def wait_for(receiver: OTLPReceiver, trace_id: str, check, timeout: float = 60) -> list[ReceivedSpan]:
    """Spans are exported in batches a few seconds apart: poll until the trace is complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = receiver.trace(trace_id)
        if check(spans):
            return spans
        time.sleep(0.5)  # poll interval
    raise AssertionError(
        f"trace {trace_id} incomplete: {[(s.service, s.name) for s in receiver.trace(trace_id)]}"
    )


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_id and span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append(span)
    return chain


def test_ask_is_one_trace_across_processes(traced) -> None:
    server, receiver, logs = traced
    question = "How many albums are there?"
    options = {"examples": 0, "max_attempts": 1, "candidates": 1, "answer": False}
    resp = httpx.post(f"{server.url}/ask", json={"question": question, "options": options}, timeout=900)
    assert resp.status_code in (200, 422), resp.text
    [record] = [r for r in joined_asks(logs) if r["question"] == question]
    trace_id = record["request_id"]  # the trace id when tracing samples the request
    if resp.status_code == 200:
        assert resp.json()["request_id"] == trace_id

    def complete(spans: list[ReceivedSpan]) -> bool:
        # each process exports its own batches, children often before parents: wait for a closed tree
        ids = {s.span_id for s in spans}
        names = {(s.service, s.name) for s in spans}
        return (
            any(svc == "askdb-llm" for svc, _ in names)
            and ("askdb", "langchain.askdb.ask") in names
            and all(s.parent_id in ids for s in spans if s.parent_id)
        )

    spans = wait_for(receiver, trace_id, complete)
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if not s.parent_id]
    assert root.service == "askdb" and "/ask" in root.name

    [chain] = [s for s in spans if s.name == "langchain.askdb.ask"]
    assert root in ancestors(chain, by_id)
    steps = {s.name for s in spans if chain in ancestors(s, by_id)}
    assert {"langchain.schema", "langchain.generate-guard-execute-repair"} <= steps, steps
    assert any(s.attributes.get("langchain.run_type") == "llm" for s in spans)

    # the runner's server span sits in the same trace, below the API request
    runner = [s for s in spans if s.service == "askdb-llm"]
    assert runner and all(root in ancestors(s, by_id) for s in runner)
    assert {s.service for s in spans} >= {"askdb", "askdb-llm"}


def test_generate_spans_link_api_and_runner(traced) -> None:
    """The runner's span is a child of the API's span: the trace context crosses the process hop."""
    server, receiver, _ = traced
    resp = httpx.post(f"{server.url}/generate", json={"prompt": "Hi", "max_new_tokens": 2}, timeout=300)
    assert resp.status_code == 200

    def linked() -> tuple[ReceivedSpan, ReceivedSpan] | None:
        with receiver.lock:
            spans = list(receiver.spans)
        apis = {s.span_id: s for s in spans if s.service == "askdb" and s.name == "POST /generate"}
        for s in spans:
            if s.service == "askdb-llm" and s.name == "POST /generate" and s.parent_id in apis:
                return apis[s.parent_id], s
        return None

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and linked() is None:
        time.sleep(0.5)  # poll interval: each process exports its batch on its own schedule
    pair = linked()
    assert pair is not None, [(s.service, s.name) for s in receiver.spans if "/generate" in s.name]
    api, runner = pair
    assert api.trace_id == runner.trace_id and not api.parent_id
