"""The OpenAI-compatible API against the real session server, through the official `openai` client."""

from __future__ import annotations

import asyncio
import base64
import struct
import time

import httpx
import openai
import pytest

from tests.metrics_util import sample_sum, wait_idle
from tests.servers import BentoServer

BUSY_INFLIGHT = ("askdb_llm_inflight_generations", "askdb_llm_inflight_generations")

CHAT = [{"role": "user", "content": "Count from 1 to 40, separated by commas."}]


@pytest.fixture(scope="module")
def oa(askdb: BentoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{askdb.url}/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture
def aoa(askdb: BentoServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{askdb.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_models_lists_served_models_providers_and_routes(oa: openai.OpenAI) -> None:
    ids = {m.id for m in oa.models.list()}
    assert {"local", "smollm2-135m-instruct", "remote", "flaky", "split"} <= ids
    assert any(i.startswith("all-minilm-l6-v2:") for i in ids)


def test_chat_completion_sync(oa: openai.OpenAI) -> None:
    raw = oa.chat.completions.with_raw_response.create(
        model="smollm2-135m-instruct", messages=CHAT, max_tokens=8, temperature=0
    )
    reply = raw.parse()
    assert raw.headers["x-askdb-provider"] == "local"
    assert reply.model.startswith("smollm2-135m-instruct:")
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 5
    assert "1" in reply.choices[0].message.content


def test_greedy_stream_equals_batch_answer(oa: openai.OpenAI) -> None:
    args = {"model": "local", "messages": CHAT, "max_completion_tokens": 12, "temperature": 0}
    whole = oa.chat.completions.create(**args).choices[0].message.content
    chunks = list(oa.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 4  # token by token
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_stop_and_seed(oa: openai.OpenAI) -> None:
    reply = oa.chat.completions.create(model="local", messages=CHAT, max_tokens=40, temperature=0, stop=["5"])
    assert "5" not in reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    args = {
        "model": "local",
        "messages": CHAT,
        "max_tokens": 10,
        "temperature": 1.0,
        "seed": 7,
        "stream": True,
    }
    runs = [
        "".join(c.choices[0].delta.content or "" for c in oa.chat.completions.create(**args))
        for _ in range(2)
    ]
    assert runs[0] == runs[1]  # a seeded sampled stream repeats itself


async def test_async_streams_interleave(aoa: openai.AsyncOpenAI) -> None:
    """Four concurrent streams share the decode loop: each gets its first token before any ends."""
    events: list[tuple[int, str]] = []

    async def one(i: int) -> None:
        stream = await aoa.chat.completions.create(
            model="local", messages=CHAT, max_tokens=24, temperature=0, stream=True
        )
        first = True
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first:
                events.append((i, "first"))
                first = False
            if chunk.choices and chunk.choices[0].finish_reason:
                events.append((i, "end"))

    await asyncio.gather(*(one(i) for i in range(4)))
    order = [kind for _, kind in events]
    assert order.count("first") == 4 and order.count("end") == 4
    assert order.index("end") > max(i for i, k in enumerate(order) if k == "first")


ROWS, CANCELLED = "askdb_llm_rows_running", "askdb_llm_cancelled"


async def _leave_after_first_chunk(url: str, n: int) -> int:
    """`n` clients open long streams and close each after its first content chunk."""
    story = [{"role": "user", "content": "Write a long story about a database."}]
    body = {"model": "local", "messages": story, "max_tokens": 512, "ignore_eos": True, "stream": True}

    async def one(client: httpx.AsyncClient) -> int:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                    return 1
        return 0

    async with httpx.AsyncClient(timeout=300) as client:
        return sum(await asyncio.gather(*(one(client) for _ in range(n))))


def test_clients_that_leave_streams_free_their_rows(askdb: BentoServer) -> None:
    """issue 18.3: 30 clients leave 512-token streams after the first chunk. Before the fix 26 rows
    kept decoding for minutes; now every row and every in-progress request is gone within seconds."""
    wait_idle(askdb.url)
    before = sample_sum(askdb.url, CANCELLED, f"{CANCELLED}_total")
    assert asyncio.run(_leave_after_first_chunk(askdb.url, 30)) >= 1
    deadline = time.monotonic() + 20  # 512 tokens x 30 would take minutes on 2 cores
    while sample_sum(askdb.url, ROWS, ROWS) > 0 or sample_sum(askdb.url, *BUSY_INFLIGHT) > 0:
        assert time.monotonic() < deadline, "rows kept decoding after their clients left"
        time.sleep(0.2)  # poll interval
    assert sample_sum(askdb.url, CANCELLED, f"{CANCELLED}_total") - before >= 30  # each one cancelled
    wait_idle(askdb.url, timeout=20)  # the runner's /stream requests ended too


def test_completions_plain_and_streaming(oa: openai.OpenAI) -> None:
    reply = oa.completions.create(model="local", prompt="SELECT name FROM", max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.usage.completion_tokens <= 5
    chunks = list(
        oa.completions.create(
            model="local", prompt="SELECT name FROM", max_tokens=5, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text


def test_embeddings(oa: openai.OpenAI) -> None:
    out = oa.embeddings.create(model="local", input=["albums by AC/DC", "tracks longer than 5 minutes"])
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 384
    # asked for explicitly, base64 comes back as sent: little-endian float32, the same vector
    b64 = oa.embeddings.create(model="local", input="albums by AC/DC", encoding_format="base64")
    decoded = struct.unpack("<384f", base64.b64decode(b64.data[0].embedding))
    assert max(abs(a - b) for a, b in zip(decoded, out.data[0].embedding, strict=True)) < 1e-6


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT, "n": 0}, "n"),  # n > 1 is served now (tests/test_openai_structured.py)
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": CHAT, "temperature": 3}, "temperature"),
        ({"messages": CHAT, "max_tokens": 0}, "max_tokens"),
        ({"messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": CHAT, "tools": [{"type": "function"}]}, "tools"),
        ({}, "messages"),
    ],
)
def test_bad_fields_are_400_naming_the_field(oa: openai.OpenAI, body: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oa.post("/chat/completions", body=body, cast_to=httpx.Response)
    assert err.value.status_code == 400 and err.value.body["param"] == param
    assert (
        err.value.body["type"] == "invalid_request_error" and param.split("[")[0] in err.value.body["message"]
    )


def test_unknown_model_is_404_and_long_prompt_400(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        oa.chat.completions.create(model="gpt-9", messages=CHAT)
    assert err.value.body["code"] == "model_not_found" and "gpt-9" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "1 " * 15000}], stream=True
        )
    assert err.value.body["code"] == "context_length_exceeded"


def test_invalid_json_is_400(askdb: BentoServer) -> None:
    resp = httpx.post(
        f"{askdb.url}/v1/chat/completions",
        content=b"{nope",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


async def _streams_across_many_calls(url: str, streams: int, calls: int) -> tuple[list[str], list[int]]:
    story = [{"role": "user", "content": "Write a long story about a database."}]
    body = {"model": "local", "messages": story, "max_tokens": 160, "ignore_eos": True, "stream": True}

    async def stream(client: httpx.AsyncClient) -> str:
        last = ""
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                last = line or last
        return last

    async def quick(client: httpx.AsyncClient, i: int) -> int:
        r = await client.post(f"{url}/generate", json={"prompt": f"Say {i}", "max_new_tokens": 1})
        return r.status_code

    async with httpx.AsyncClient(timeout=600) as client:
        opened = [asyncio.ensure_future(stream(client)) for _ in range(streams)]
        codes = []
        for start in range(0, calls, 8):
            codes += await asyncio.gather(*(quick(client, i) for i in range(start, min(calls, start + 8))))
        return list(await asyncio.gather(*opened)), codes


def test_streams_survive_the_runner_clients_turnover(askdb: BentoServer) -> None:
    """BentoML's client to a runner replaced its HTTP session every 100 requests and closed the old
    one under whatever was running on it: streams in flight died (503 "runner unavailable"). 110
    runner calls while 6 long streams run: every stream ends with [DONE], every call succeeds."""
    ends, codes = asyncio.run(_streams_across_many_calls(askdb.url, 6, 110))
    assert ends == ["data: [DONE]"] * 6
    assert codes == [200] * 110


def test_length_means_the_budget_was_reached(askdb: BentoServer) -> None:
    """issue 18.7: `finish_reason: "length"` came after 92, 49 or 1 of 250 tokens in 3 of 10 calls.
    Ten at once, EOS ignored: each reports "length" with exactly its 120 tokens (past all three)."""

    async def ten() -> list[dict]:
        body = {"model": "local", "prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": True}
        async with httpx.AsyncClient(timeout=600) as client:
            replies = await asyncio.gather(
                *(client.post(f"{askdb.url}/v1/completions", json=body) for _ in range(10))
            )
        return [r.json() for r in replies]

    for reply in asyncio.run(ten()):
        assert reply["choices"][0]["finish_reason"] == "length", reply
        assert reply["usage"]["completion_tokens"] == 120, reply
