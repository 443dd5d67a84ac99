"""ASKDB_LLM_SCHEDULER=continuous: /generate requests join the stream engine's step loop one by one.

A real `bentoml serve runners.llm:LLM` with the continuous scheduler, compared with the session
server's runner (the default, BentoML's adaptive batches).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import bentoml
import pytest

from tests.metrics_util import sample_sum
from tests.servers import ROOT, BentoServer

INFLIGHT = "askdb_llm_inflight_generations"
PROMPTS = [
    {"prompt": "The capital of France is", "max_new_tokens": 10},
    {"prompt": "SELECT name FROM", "max_new_tokens": 10},
    {"prompt": "Once upon a time, in a small village by the sea, there lived", "max_new_tokens": 10},
    {"prompt": "Count: one, two, three,", "max_new_tokens": 24, "stop": [","]},
    {"prompt": "def add(a, b):", "max_new_tokens": 3},
]


@pytest.fixture(scope="module")
def continuous() -> Iterator[BentoServer]:
    with BentoServer("runners.llm:LLM", env={"ASKDB_LLM_SCHEDULER": "continuous"}) as server:
        yield server


async def _gather(url: str, bodies: list[dict]) -> list[dict]:
    async with bentoml.AsyncHTTPClient(url, timeout=300) as client:
        return list(await asyncio.gather(*(client.generate(requests=[b]) for b in bodies)))


def test_runner_reports_its_scheduler(continuous: BentoServer) -> None:
    with bentoml.SyncHTTPClient(continuous.url, timeout=60) as c:
        info = c.info()
    assert info["scheduler"] == "continuous" and info["max_batch_size"] == 32


def test_concurrent_results_match_the_batch_scheduler(
    continuous: BentoServer, client: bentoml.SyncHTTPClient
) -> None:
    """Greedy decoding: the same text, finish reason and token counts as the adaptive-batch runner
    behind the session's AskDB service, with per-request budgets and stop strings held."""
    results = [r for [r] in asyncio.run(_gather(continuous.url, PROMPTS))]
    expected = [client.generate(**b) for b in PROMPTS]
    for got, want in zip(results, expected, strict=True):
        assert (got["text"], got["finish_reason"]) == (want["text"], want["finish_reason"])
        assert got["completion_tokens"] == want["usage"]["completion_tokens"]
        assert got["prompt_tokens"] == want["usage"]["prompt_tokens"]
    assert results[3]["finish_reason"] == "stop" and "," not in results[3]["text"]
    assert results[4]["completion_tokens"] == 3 and results[4]["finish_reason"] == "length"


def test_a_short_request_does_not_wait_for_a_long_one(continuous: BentoServer) -> None:
    """The defining property: a request that arrives while another decodes joins the running loop
    and leaves it when done, instead of queuing behind the whole long generation."""
    long = {"prompt": "Write a long story about the sea.", "max_new_tokens": 400, "ignore_eos": True}
    short = {"prompt": "The capital of France is", "max_new_tokens": 4}
    before = sample_sum(continuous.url, "askdb_llm_generations", "askdb_llm_generations_total")

    async def scenario() -> tuple[dict, bool, dict]:
        async with bentoml.AsyncHTTPClient(continuous.url, timeout=600) as c:
            slow = asyncio.ensure_future(c.generate(requests=[long]))
            deadline = time.monotonic() + 300
            while sample_sum(continuous.url, INFLIGHT, INFLIGHT) < 1:  # decoding, under either scheduler
                assert time.monotonic() < deadline and not slow.done(), "the long request never started"
                await asyncio.sleep(0.05)
            [quick] = await c.generate(requests=[short])
            long_running = not slow.done()
            [done] = await slow
            return quick, long_running, done

    quick, long_running, done = asyncio.run(scenario())
    assert quick["completion_tokens"] == 4 and quick["text"].strip()
    assert long_running, "the short request came back only after the long one finished"
    assert done["completion_tokens"] == 400 and done["finish_reason"] == "length"
    after = sample_sum(continuous.url, "askdb_llm_generations", "askdb_llm_generations_total")
    assert after - before == 2  # both metered, like batch-path generations


def test_grammar_and_bad_requests_keep_their_behaviour(continuous: BentoServer) -> None:
    grammar = 'start: " yes" | " no"'
    bodies = [
        {"prompt": "Is Paris in France? Answer yes or no:", "max_new_tokens": 4, "grammar": grammar},
        {"prompt": "word " * 9000, "max_new_tokens": 4},  # past the 8192-token context
        {"prompt": "hi", "max_new_tokens": 2, "grammar": "start: undefined_rule ("},
    ]
    [[constrained], [too_long], [bad_grammar]] = asyncio.run(_gather(continuous.url, bodies))
    assert constrained["text"] in (" yes", " no"), constrained
    assert too_long["finish_reason"] == "error" and "context" in too_long["error"]
    assert bad_grammar["finish_reason"] == "error" and bad_grammar["error"]


def test_unknown_scheduler_is_refused_by_name() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import runners.config"],
        cwd=ROOT,
        env={**os.environ, "ASKDB_LLM_SCHEDULER": "fifo"},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "ASKDB_LLM_SCHEDULER='fifo'" in done.stderr and "continuous" in done.stderr
