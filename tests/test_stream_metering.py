"""Streamed tokens count against a key's tokens/min limit on a real `bentoml serve` (tests/guarded.py),
whether or not the client asked for the usage chunk or stayed to the end: the server meters the
runner's running counts (api/usage.py TokenLedger). Keys `stream` and `leave` allow 250 tokens/min;
each request here uses about 115 (a long prompt, exactly MAX_NEW_TOKENS completion tokens), so the
third request still gets in and the fourth is refused."""

from __future__ import annotations

import time

import httpx

from tests.guarded import MAX_NEW_TOKENS, STREAM_TOKENS_PER_MIN, Guarded
from tests.metrics_util import sample_sum

IN_PROGRESS = "bentoml_service_request_in_progress"
MARGIN = 40  # tokens the bucket refills (250/min) while the test runs, with room to spare


def _spent_per_request(guarded: Guarded, path: str, body: dict) -> dict[str, int]:
    """The same request, not streamed, by the unlimited key: its `usage` is what a stream spends."""
    r = httpx.post(f"{guarded.url}{path}", headers=guarded.auth("full"), json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["usage"]


def _wait_finished(guarded: Guarded, path: str) -> None:
    """Poll /metrics until the server is done with `path` (a left stream is charged when it ends)."""
    deadline = time.monotonic() + 60
    while sample_sum(guarded.url, IN_PROGRESS, IN_PROGRESS, endpoint=path, runner_name="askdb") > 0:
        assert time.monotonic() < deadline, f"{path} still in progress"
        time.sleep(0.1)


def _assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text[:300]
    assert f"tokens_per_minute={STREAM_TOKENS_PER_MIN}" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1


def test_streams_without_the_usage_chunk_are_charged(guarded: Guarded) -> None:
    body = {"prompt": "hello " * 110, "max_tokens": MAX_NEW_TOKENS, "ignore_eos": True}
    per = _spent_per_request(guarded, "/v1/completions", body)["total_tokens"]
    assert 2 * per < STREAM_TOKENS_PER_MIN < 3 * per - MARGIN  # the arithmetic below holds
    for _ in range(3):
        r = httpx.post(
            f"{guarded.url}/v1/completions",
            headers=guarded.auth("stream"),
            json={**body, "stream": True},  # no stream_options.include_usage: no usage chunk is sent
            timeout=120,
        )
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n"), r.text[:300]
        assert '"usage"' not in r.text
    r = httpx.post(f"{guarded.url}/v1/completions", headers=guarded.auth("stream"), json=body, timeout=120)
    _assert_refused(r)


def test_streams_left_after_the_first_chunk_are_charged(guarded: Guarded) -> None:
    path = "/v1/chat/completions"
    body = {
        "messages": [{"role": "user", "content": "hello " * 80}],
        "max_tokens": MAX_NEW_TOKENS,
        "ignore_eos": True,
    }
    prompt = _spent_per_request(guarded, path, body)["prompt_tokens"]
    # each stream left early spent its prompt and 1..MAX_NEW_TOKENS completion tokens
    assert 2 * (prompt + MAX_NEW_TOKENS) < STREAM_TOKENS_PER_MIN < 3 * (prompt + 1) - MARGIN
    streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
    for _ in range(3):
        with httpx.stream(
            "POST", f"{guarded.url}{path}", headers=guarded.auth("leave"), json=streamed, timeout=120
        ) as r:
            assert r.status_code == 200
            first = next(line for line in r.iter_lines() if line.startswith("data:"))
            assert '"chat.completion.chunk"' in first
        # leaving the block closed the connection before the usage chunk came
        _wait_finished(guarded, path)
    r = httpx.post(f"{guarded.url}{path}", headers=guarded.auth("leave"), json=body, timeout=120)
    _assert_refused(r)
