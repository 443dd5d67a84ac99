"""Limits against a real `bentoml serve` (tests/guarded.py): per-key rate limits with Retry-After,
body size and body time, the service's concurrency cap, and every request field's bound."""

from __future__ import annotations

import json
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.guarded import (
    BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CONCURRENCY,
    MAX_EMBED_TEXT_CHARS,
    MAX_EMBED_TEXTS,
    MAX_NEW_TOKENS,
    Guarded,
)
from tests.metrics_util import sample_sum


def test_requests_per_minute(guarded: Guarded) -> None:
    url = f"{guarded.url}/v1/models"
    statuses = [httpx.get(url, headers=guarded.auth("rpm")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    r = httpx.get(url, headers=guarded.auth("rpm"))
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 60
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape under /v1
    assert "requests_per_minute=3" in error["message"]
    client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=guarded.keys["rpm"], max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.models.list()
    r = httpx.post(f"{guarded.url}/embed", headers=guarded.auth("rpm"), json={"texts": ["a"]})
    assert r.status_code == 429 and set(r.json()["error"]) == {"type", "message"}
    # Another key is not affected.
    assert httpx.get(url, headers=guarded.auth("full")).status_code == 200


def test_tokens_per_minute_counts_what_was_used(guarded: Guarded) -> None:
    spent, refused = [], None
    for _ in range(8):
        r = httpx.post(
            f"{guarded.url}/generate",
            headers=guarded.auth("tpm"),
            json={"prompt": "Hello", "max_new_tokens": MAX_NEW_TOKENS},
            timeout=120,
        )
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
        spent.append(r.json()["usage"]["total_tokens"])
    assert refused is not None, f"never refused after {sum(spent)} tokens"
    # Refused only once the 12 tokens were used, and admitted while any were left.
    assert sum(spent) >= 12
    assert sum(spent[:-1]) < 12 + 1
    assert "tokens_per_minute=12" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60


@pytest.mark.parametrize("chunked", [False, True])
def test_body_size_limit(guarded: Guarded, chunked: bool) -> None:
    body = b'{"texts": ["' + b"a" * MAX_BODY_BYTES + b'"]}'
    content = iter([body[i : i + 65536] for i in range(0, len(body), 65536)]) if chunked else body
    headers = {**guarded.auth("full"), "content-type": "application/json"}
    r = httpx.post(f"{guarded.url}/embed", headers=headers, content=content)
    assert r.status_code == 413
    assert str(MAX_BODY_BYTES) in r.json()["error"]["message"]
    assert "ASKDB_MAX_BODY_BYTES" in r.json()["error"]["message"]


def _start_slow_upload(guarded: Guarded, key: str = "full") -> tuple[socket.socket, bytes]:
    """A request whose headers are sent and whose body is not (yet): it holds one of its key's slots."""
    body = b'{"texts": ["slow"]}'
    head = (
        f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {guarded.keys[key]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", guarded.server.port), timeout=60)
    sock.sendall(head.encode() + body[:4])
    return sock, body[4:]


def _response_of(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def test_concurrency_cap_refuses_at_once_and_recovers(guarded: Guarded) -> None:
    """The `full` key's cap is the service's (ASKDB_MAX_CONCURRENCY, no ASKDB_MAX_CONCURRENT_PER_KEY):
    its slow uploads hold its slots, the next request of the key is refused at once."""
    held = [_start_slow_upload(guarded) for _ in range(MAX_CONCURRENCY)]
    started = time.monotonic()
    embed = f"{guarded.url}/embed"
    deadline = started + BODY_TIMEOUT_S - 0.5
    r = None
    while time.monotonic() < deadline:  # poll until both slots are seen taken
        t0 = time.monotonic()
        r = httpx.post(embed, headers=guarded.auth("full"), json={"texts": ["a"]}, timeout=30)
        if r.status_code == 429:
            assert time.monotonic() - t0 < 1.0  # refused at once, not queued
            break
    assert r is not None and r.status_code == 429, r and r.text
    assert httpx.get(f"{guarded.url}/readyz").status_code == 200  # health stays outside the cap
    # One slow client finishes its body: served normally.
    sock, rest = held[0]
    sock.sendall(rest)
    assert _response_of(sock)[0] == 200
    # The other never does: cut off after ASKDB_BODY_TIMEOUT_S with 408, freeing its slot.
    status, payload = _response_of(held[1][0])
    waited = time.monotonic() - started
    assert status == 408 and b"ASKDB_BODY_TIMEOUT_S" in payload
    assert BODY_TIMEOUT_S - 0.5 <= waited <= BODY_TIMEOUT_S + 10
    assert (
        httpx.post(embed, headers=guarded.auth("full"), json={"texts": ["a"]}, timeout=60).status_code == 200
    )


def test_a_limited_keys_slow_uploads_leave_other_keys_served(guarded: Guarded) -> None:
    """`slow` (3 requests/min) opens 30 slow uploads: 27 are refused at once, from their headers
    alone; the 3 admitted ones wait for their body without holding any of the service's slots, so
    other keys' /generate calls are served meanwhile (before: they filled BentoML's cap, others 429)."""
    warm = httpx.post(
        f"{guarded.url}/generate", headers=guarded.auth("full"), json={"prompt": "Hi"}, timeout=120
    )
    assert warm.status_code == 200  # a cold runner's first call could outlast the body timeout below
    uploads = [sock for sock, _ in (_start_slow_upload(guarded, "slow") for _ in range(30))]
    started = time.monotonic()
    answered: list[socket.socket] = []
    while len(answered) < 27 and time.monotonic() - started < 1.5:  # refused at once: poll, bounded
        readable, _, _ = select.select([s for s in uploads if s not in answered], [], [], 0.1)
        answered += readable
    assert len(answered) == 27, len(answered)
    held = [s for s in uploads if s not in answered]
    assert not select.select(held, [], [], 0)[0]  # the 3 admitted uploads are still waiting for their body
    generate = f"{guarded.url}/generate"
    with ThreadPoolExecutor(MAX_CONCURRENCY) as pool:  # as many as the service's cap allows at once
        calls = [
            pool.submit(httpx.post, generate, headers=guarded.auth(k), json={"prompt": "Hi"}, timeout=60)
            for k in ("full", "hashed")
        ]
        served = [c.result() for c in calls]
    # admitted within a moment of being sent, while the uploads were held: not refused by the cap
    assert [r.status_code for r in served] == [200, 200], [r.text for r in served]
    refused = [_response_of(s) for s in answered]
    assert all(status == 429 and b"requests_per_minute=3" in body for status, body in refused), refused
    assert [_response_of(s)[0] for s in held] == [408] * 3  # cut off after ASKDB_BODY_TIMEOUT_S


def test_max_concurrent_per_key_refuses_at_once_with_retry_after(guarded: Guarded) -> None:
    sock, rest = _start_slow_upload(guarded, "conc")  # `conc` may have 1 request in flight
    for _ in range(3):
        t0 = time.monotonic()
        r = httpx.post(
            f"{guarded.url}/embed", headers=guarded.auth("conc"), json={"texts": ["a"]}, timeout=30
        )
        assert r.status_code == 429 and time.monotonic() - t0 < 1.0, r.text
        assert "max_concurrent=1" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
    other = httpx.post(
        f"{guarded.url}/embed", headers=guarded.auth("full"), json={"texts": ["a"]}, timeout=60
    )
    assert other.status_code == 200
    sock.sendall(rest)
    assert _response_of(sock)[0] == 200
    r = httpx.post(f"{guarded.url}/embed", headers=guarded.auth("conc"), json={"texts": ["a"]}, timeout=60)
    assert r.status_code == 200, r.text  # its slot was given back


def test_service_cap_counts_requests_past_their_body(guarded: Guarded) -> None:
    """Two keys' /ask calls fill ASKDB_MAX_CONCURRENCY=2: a third key is refused at once, in askdb's
    shape with Retry-After, while health stays outside the cap."""
    body = {"question": "How many albums does each artist have?", "options": {"max_attempts": 2}}
    gauge = "bentoml_service_request_in_progress"
    with ThreadPoolExecutor(2) as pool:
        asks = [
            pool.submit(httpx.post, f"{guarded.url}/ask", headers=guarded.auth(k), json=body, timeout=300)
            for k in ("scoped", "hashed")
        ]
        while sample_sum(guarded.url, gauge, gauge, endpoint="/ask", runner_name="askdb") < 2:
            assert not any(a.done() for a in asks), [a.result().text for a in asks if a.done()]
            time.sleep(0.05)  # poll /metrics (outside the cap) until both are in flight
        t0 = time.monotonic()
        r = httpx.post(f"{guarded.url}/databases", headers=guarded.auth("full"), json={}, timeout=30)
        assert r.status_code == 429 and time.monotonic() - t0 < 1.0, r.text
        assert "ASKDB_MAX_CONCURRENCY" in r.json()["error"]["message"] and int(r.headers["retry-after"]) >= 1
        assert httpx.get(f"{guarded.url}/readyz").status_code == 200
        assert all(a.result().status_code in (200, 422) for a in asks)
    r = httpx.post(f"{guarded.url}/databases", headers=guarded.auth("full"), json={}, timeout=30)
    assert r.status_code == 200  # both slots given back


LONG = "x" * 40_000
FIELD_LIMITS = [
    ("/generate", {"prompt": LONG}, "prompt"),
    ("/generate", {"prompt": "hi", "max_new_tokens": MAX_NEW_TOKENS + 1}, "max_new_tokens"),
    ("/generate", {"prompt": "hi", "stop": ["a"] * 5}, "stop"),
    ("/embed", {"texts": ["a"] * (MAX_EMBED_TEXTS + 1)}, "texts"),
    ("/embed", {"texts": ["a" * (MAX_EMBED_TEXT_CHARS + 1)]}, "texts"),
    ("/ask", {"question": "x" * 1001}, "question"),
    ("/ask", {"question": "How many artists?", "max_rows": 100_000}, "max_rows"),
    ("/schema", {"db": "d" * 65}, "db"),
    (
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "a"}] * 257},
        "messages",
    ),
    ("/v1/chat/completions", {"model": "x", "messages": [{"role": "user", "content": LONG}]}, "content"),
    (
        "/v1/chat/completions",
        {"model": "x", "messages": [{"role": "user", "content": "a"}], "max_tokens": MAX_NEW_TOKENS + 1},
        "max_tokens",
    ),
    ("/v1/completions", {"model": "x", "prompt": "a", "max_tokens": MAX_NEW_TOKENS + 1}, "max_tokens"),
    ("/v1/embeddings", {"model": "x", "input": ["a"] * (MAX_EMBED_TEXTS + 1)}, "input"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), FIELD_LIMITS, ids=[f"{p}:{f}" for p, _, f in FIELD_LIMITS]
)
def test_each_field_is_bounded_and_named(guarded: Guarded, path: str, body: dict, field: str) -> None:
    r = httpx.post(f"{guarded.url}{path}", headers=guarded.auth("full"), json=body, timeout=60)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert field in r.text, r.text[:500]


# Numbers that pass a plain `int`/`float` but overflow what they reach (torch's 64-bit seed, C
# integers, float arithmetic), in JSON as a client can write it: NaN and Infinity are Python's json.
HUGE, BELOW_INT64, INT_1E30 = str(2**64), str(-(2**63) - 1), str(10**30)
CHAT = '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "temperature": 1, %s}'
COMPLETION = '{"prompt": "Hi", "max_tokens": 1, "temperature": 1, %s}'
HOSTILE_NUMBERS = [
    *[("/v1/chat/completions", CHAT, "seed", v) for v in (HUGE, BELOW_INT64, INT_1E30, "1e30")],
    *[("/v1/completions", COMPLETION, "seed", v) for v in (HUGE, BELOW_INT64, INT_1E30, "1e30")],
    *[("/v1/chat/completions", CHAT, f, v) for f in ("temperature", "top_p") for v in ("NaN", "Infinity")],
    ("/v1/chat/completions", CHAT, "top_p", "-0.0"),
    ("/v1/chat/completions", CHAT, "top_p", "1e-400"),  # underflows to 0.0
    *[("/v1/chat/completions", CHAT, f, HUGE) for f in ("max_tokens", "max_completion_tokens", "n")],
    *[("/v1/completions", COMPLETION, "max_tokens", v) for v in (HUGE, "1e308", "NaN")],
    *[("/v1/embeddings", '{"input": "a", %s}', "dimensions", v) for v in (HUGE, INT_1E30, "NaN")],
    *[("/generate", '{"prompt": "Hi", %s}', "max_new_tokens", v) for v in (HUGE, "1e308", "NaN")],
    *[("/generate", '{"prompt": "Hi", %s}', "temperature", v) for v in ("NaN", "Infinity", "1e308")],
    *[("/ask", '{"question": "How many artists?", %s}', "max_rows", v) for v in (HUGE, "NaN", "1e308")],
    *[
        ("/ask", '{"question": "How many artists?", "options": {%s}}', f, v)
        for f, v in [("timeout_s", "NaN"), ("timeout_s", "Infinity"), ("skeleton", "NaN"), ("examples", HUGE)]
    ],
    *[
        ("/feedback", '{"request_id": "0123456789abcdef0123456789abcdef", %s}', "score", v)
        for v in ("NaN", "Infinity", "-1e308", HUGE)
    ],
]


@pytest.mark.parametrize(
    ("path", "template", "field", "value"),
    HOSTILE_NUMBERS,
    ids=[f"{p}:{f}={v[:8]}" for p, _, f, v in HOSTILE_NUMBERS],
)
def test_hostile_numbers_are_400_naming_the_field(
    guarded: Guarded, path: str, template: str, field: str, value: str
) -> None:
    body = template % f'"{field}": {value}'
    headers = {**guarded.auth("full"), "content-type": "application/json"}
    r = httpx.post(f"{guarded.url}{path}", headers=headers, content=body, timeout=60)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert field in r.text, r.text[:300]


@pytest.mark.parametrize("seed", [2**63 - 1, -(2**63)])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_seeds_across_the_whole_64_bit_range_are_served(guarded: Guarded, path: str, seed: int) -> None:
    body = json.loads((CHAT if "chat" in path else COMPLETION) % f'"seed": {seed}')
    r = httpx.post(f"{guarded.url}{path}", headers=guarded.auth("full"), json=body, timeout=120)
    assert r.status_code == 200, r.text[:300]


def test_bad_requests_log_one_line_without_a_traceback(guarded: Guarded) -> None:
    """A client's 4xx is one WARNING line (method, path, status, field); BentoML logged an ERROR with
    a traceback for each, which buried the real errors."""
    log = guarded.server.log_path
    start = log.stat().st_size
    bad = [
        ("/generate", {"prompt": "hi", "max_new_tokens": MAX_NEW_TOKENS + 1}, "400: max_new_tokens"),
        ("/schema", {"db": "d" * 65}, "400: db"),
        ("/feedback", {"request_id": "0" * 32, "score": 2}, "400: score"),
        ("/ask", {"question": "How many artists?", "db": "no_such_db"}, "404: "),
    ]
    for path, body, _ in bad:
        r = httpx.post(f"{guarded.url}{path}", headers=guarded.auth("full"), json=body, timeout=60)
        assert 400 <= r.status_code < 500, r.text
    expected = [f"POST {path} -> {tail}" for path, _, tail in bad]
    deadline = time.monotonic() + 10
    while True:  # the worker's log handler writes asynchronously: poll, bounded
        with log.open("rb") as f:
            f.seek(start)
            new = f.read().decode(errors="replace")
        if all(e in new for e in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Traceback" not in new and "Exception on" not in new, new[-3000:]
    lines = new.splitlines()
    for e in expected:
        found = [line for line in lines if e in line]
        assert len(found) == 1 and "[WARNING]" in found[0] and len(found[0]) < 400, (e, found)
