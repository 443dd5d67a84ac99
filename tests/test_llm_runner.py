"""The served LLM engine: one continuous loop behind every entry point, with its queue bound and
cancellation seen from outside, through a real AskDB service with few slots (so they run out)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import bentoml
import httpx
import pytest

from tests.metrics_util import sample_sum, wait_idle
from tests.servers import BentoServer

SLOTS, WAITING = 2, 1
INFLIGHT = "askdb_llm_inflight_generations"
ROWS = "askdb_llm_rows_running"


@pytest.fixture(scope="module")
def small() -> Iterator[BentoServer]:
    env = {
        "ASKDB_LLM_SLOTS": str(SLOTS),
        "ASKDB_LLM_MAX_WAITING": str(WAITING),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    with BentoServer("service:AskDB", env=env) as server:
        yield server


def _long(tokens: int = 200) -> dict:  # ~10 s of decoding on 2 CPU cores: still running when a short one ends
    return {
        "model": "local",
        "prompt": "Write a long story about the sea.",
        "max_tokens": tokens,
        "ignore_eos": True,
    }


async def _until(url: str, metric: str, n: int, timeout: float = 120) -> None:
    """Poll a gauge until it reads `n`, without blocking the requests running meanwhile."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(sample_sum, url, metric, metric) != n:
        assert time.monotonic() < deadline, f"{metric} never reached {n}"
        await asyncio.sleep(0.05)  # poll interval


def test_info_reports_the_engine(small: BentoServer) -> None:
    with bentoml.SyncHTTPClient(small.url, timeout=60) as c:
        out = c.generate(prompt="The capital of France is", max_new_tokens=4)
    assert out["finish_reason"] == "length" and out["usage"]["completion_tokens"] == 4


def test_a_short_request_does_not_wait_for_a_long_one(small: BentoServer) -> None:
    """A request arriving while another decodes joins the running loop and leaves when done."""
    wait_idle(small.url)

    async def scenario() -> tuple[dict, bool, dict]:
        async with httpx.AsyncClient(base_url=small.url, timeout=600) as c:
            slow = asyncio.ensure_future(c.post("/v1/completions", json=_long()))
            deadline = time.monotonic() + 300
            while await asyncio.to_thread(sample_sum, small.url, INFLIGHT, INFLIGHT) < 1:
                assert time.monotonic() < deadline and not slow.done(), "the long request never started"
                await asyncio.sleep(0.05)
            quick = (
                await c.post("/generate", json={"prompt": "The capital of France is", "max_new_tokens": 4})
            ).json()
            long_running = not slow.done()
            return quick, long_running, (await slow).json()

    quick, long_running, done = asyncio.run(scenario())
    assert quick["usage"]["completion_tokens"] == 4 and quick["text"].strip()
    assert long_running, "the short request came back only after the long one finished"
    assert done["usage"]["completion_tokens"] == 200 and done["choices"][0]["finish_reason"] == "length"


def test_past_the_queue_bound_is_503_with_retry_after(small: BentoServer) -> None:
    """2 slots busy, 1 request waiting: the next is refused at once, not queued; then served again."""
    wait_idle(small.url)

    async def scenario() -> tuple[list[httpx.Response], httpx.Response, float]:
        async with httpx.AsyncClient(base_url=small.url, timeout=600) as c:
            held = [asyncio.ensure_future(c.post("/v1/completions", json=_long(150))) for _ in range(SLOTS)]
            await _until(small.url, ROWS, SLOTS)
            waiting = asyncio.ensure_future(c.post("/v1/completions", json=_long(8)))
            await _until(small.url, "askdb_llm_queue_depth", WAITING)
            t0 = time.monotonic()
            refused = await c.post("/generate", json={"prompt": "hi", "max_new_tokens": 4})
            elapsed = time.monotonic() - t0
            return [*await asyncio.gather(*held), await waiting], refused, elapsed

    served, refused, elapsed = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert "capacity" in refused.json()["error"]["message"] and elapsed < 5
    assert [r.status_code for r in served] == [200, 200, 200]
    again = httpx.post(f"{small.url}/v1/completions", json=_long(4), timeout=60)
    assert again.status_code == 200
    full = sample_sum(small.url, "askdb_llm_rejected", "askdb_llm_rejected_total", reason="queue_full")
    assert full >= 1


def test_a_client_that_leaves_a_plain_request_frees_its_row(small: BentoServer) -> None:
    """Not only streams: a non-streaming request whose client disconnects stops decoding."""
    wait_idle(small.url)
    before = sample_sum(small.url, "askdb_llm_cancelled", "askdb_llm_cancelled_total")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{small.url}/v1/completions", json=_long(1500), timeout=httpx.Timeout(60, read=3))
    deadline = time.monotonic() + 15  # 1500 tokens would take minutes

    def cancelled() -> float:
        return sample_sum(small.url, "askdb_llm_cancelled", "askdb_llm_cancelled_total") - before

    while cancelled() < 1 or sample_sum(small.url, ROWS, ROWS) > 0:
        assert time.monotonic() < deadline, "the request kept its row after its client left"
        time.sleep(0.1)  # poll interval
    assert cancelled() == 1


def test_grammar_and_bad_requests_through_a_runner_served_alone() -> None:
    grammar = 'start: " yes" | " no"'
    bodies = [
        {"prompt": "Is Paris in France? Answer yes or no:", "max_new_tokens": 4, "grammar": grammar},
        {"prompt": "word " * 9000, "max_new_tokens": 4},  # past the 8192-token context
        {"prompt": "hi", "max_new_tokens": 2, "grammar": "start: undefined_rule ("},
    ]
    with BentoServer("runners.llm:LLM", env={"ASKDB_LLM_SLOTS": "2"}) as alone:

        async def gather() -> list:
            async with bentoml.AsyncHTTPClient(alone.url, timeout=300) as c:
                return list(await asyncio.gather(*(c.generate(requests=[b]) for b in bodies)))

        [[constrained], [too_long], [bad_grammar]] = asyncio.run(gather())
        with bentoml.SyncHTTPClient(alone.url, timeout=60) as c:
            info = c.info()
    assert constrained["text"] in (" yes", " no"), constrained
    assert (
        too_long["finish_reason"] == "error"
        and too_long["code"] == "invalid"
        and "context" in too_long["error"]
    )
    assert bad_grammar["finish_reason"] == "error" and bad_grammar["error"]
    assert info["scheduler"] == "continuous" and info["max_batch_size"] == 2 and info["max_context"] == 8192
