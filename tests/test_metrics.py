"""askdb_* metrics on the live /metrics: exact token counts, latency histograms, bounded labels.

The LLM runner is its own process; its counters reach the API service's /metrics only through
BentoML's prometheus multiprocess directory, so these checks also cover cross-process aggregation.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import bentoml
import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from observability import metrics
from tests.metrics_util import wait_idle
from tests.servers import BentoServer


def snapshot(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of every askdb_* family on /metrics, keyed by (sample name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("askdb_"):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(snap: dict, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in snap.items() if n == name and all((k, v2) in ls for k, v2 in labels.items())
    )


def test_generation_metrics_count_exactly(askdb: BentoServer, client: bentoml.SyncHTTPClient) -> None:
    marker = f"zq{uuid.uuid4().hex[:10]}"  # a prompt word that must never become a label
    wait_idle(askdb.url)  # an earlier test's abandoned generation would count in the deltas
    before = snapshot(askdb.url)
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda n: client.generate(prompt=f"{marker} {n}", max_new_tokens=n), (2, 3, 5)))
    after = snapshot(askdb.url)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    prompt = sum(o["usage"]["prompt_tokens"] for o in outs)
    completion = sum(o["usage"]["completion_tokens"] for o in outs)
    assert delta("askdb_llm_prompt_tokens_total", provider="bentoml") == prompt
    assert delta("askdb_llm_generation_tokens_total", provider="bentoml") == completion
    for reason in ("stop", "length"):
        expected = sum(o["finish_reason"] == reason for o in outs)
        assert delta("askdb_llm_generations_total", finish_reason=reason) == expected
    assert delta("askdb_llm_time_to_first_token_seconds_count") == 3
    assert delta("askdb_llm_queue_wait_seconds_count") == 3
    assert delta("askdb_llm_time_per_output_token_seconds_count") == sum(
        o["usage"]["completion_tokens"] > 1 for o in outs
    )
    # TTFT includes the queue wait, so its sum is at least the waits' sum
    assert delta("askdb_llm_time_to_first_token_seconds_sum") >= delta("askdb_llm_queue_wait_seconds_sum") > 0
    assert total(after, "askdb_llm_inflight_generations") == 0
    models = {dict(ls).get("model") for (n, ls) in after if n == "askdb_llm_generation_tokens_total"}
    assert outs[0]["model"] in models

    text = httpx.get(f"{askdb.url}/metrics", timeout=30).text
    assert marker not in text


def test_runner_up_probe(askdb: BentoServer) -> None:
    snap = snapshot(askdb.url)
    assert total(snap, "askdb_runner_up", runner="askdb-llm") == 1
    assert total(snap, "askdb_runner_up", runner="askdb-embedding") == 1


def test_feedback_counts_and_rejects_bad_input(askdb: BentoServer) -> None:
    before = total(snapshot(askdb.url), "askdb_feedback_score_count")
    ok = httpx.post(f"{askdb.url}/feedback", json={"request_id": uuid.uuid4().hex, "score": 0.75}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert ok.json()["score"] == 0.75
    assert total(snapshot(askdb.url), "askdb_feedback_score_count") == before + 1

    bad = httpx.post(f"{askdb.url}/feedback", json={"request_id": "not-an-id", "score": 7}, timeout=30)
    assert bad.status_code == 400
    assert "request_id" in bad.text and "score" in bad.text


@pytest.mark.parametrize(
    ("outcome", "label"), [("ok", "ok"), ("sql_error", "sql_error"), ("DROP TABLE users", "other")]
)
def test_outcome_labels_are_bounded(outcome: str, label: str) -> None:
    assert metrics.bounded(outcome, metrics.OUTCOMES) == label


def test_record_ask_fills_every_family() -> None:
    """In-process on a private registry: one /ask observation lands in each text-to-SQL family."""
    registry = CollectorRegistry()
    for family in (metrics.ask_requests, metrics.ask_attempts, metrics.ask_rows, metrics.ask_stage):
        registry.register(family)
    metrics.record_ask("refused", "m:1", 3, None, 1.5, {"schema": 0.1, "generate": 1.2, "bogus": 0.2})
    get = registry.get_sample_value
    assert get("askdb_ask_requests_total", {"outcome": "refused", "model": "m:1"}) >= 1
    assert get("askdb_ask_attempts_bucket", {"outcome": "refused", "le": "3.0"}) >= 1
    assert get("askdb_ask_stage_seconds_count", {"stage": "generate"}) >= 1
    assert get("askdb_ask_stage_seconds_count", {"stage": "other"}) >= 1  # unknown stage names collapse


def test_streamed_generation_is_metered(askdb: BentoServer) -> None:
    """A /v1 streamed chat goes through the runner's token stream; it is counted like a batch call."""
    wait_idle(askdb.url)
    before = snapshot(askdb.url)
    oai = openai.OpenAI(base_url=f"{askdb.url}/v1", api_key="unused", timeout=300)
    model = oai.models.list().data[0].id
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    after = snapshot(askdb.url)

    def delta(name: str) -> float:
        return total(after, name) - total(before, name)

    assert delta("askdb_llm_generation_tokens_total") == usage.completion_tokens > 0
    assert delta("askdb_llm_prompt_tokens_total") == usage.prompt_tokens
    assert delta("askdb_llm_generations_total") == 1
    assert delta("askdb_llm_time_to_first_token_seconds_count") == 1
    assert total(after, "askdb_llm_inflight_generations") == 0
