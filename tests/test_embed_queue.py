"""Embedding calls whose client leaves before their batch runs are never encoded (runners/batch_queue.py).

A large call keeps the embedding runner's one batch busy; eight one-text calls queue behind it; five
of their clients disconnect. The queue must shrink to three at once, while the large batch is still
running, and the texts encoded must be the large call's and the three survivors', not the five.
Run against the runner alone and through the whole service (the API's own disconnect middleware
cancels its runner call, which closes the connection to the runner).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.metrics_util import sample_sum, wait_idle
from tests.servers import BentoServer

QUEUED, RUNNING = "askdb_embed_rows_queued", "askdb_embed_rows_running"
ENCODED, CANCELLED = "askdb_embed_rows", "askdb_embed_cancelled"
BIG = ["a long text about databases and their tables " * 40] * 16  # 256 tokens each: ~5 s on 2 CPU cores
WAITING, LEAVING = 8, 5


@pytest.fixture(scope="module")
def embedding_runner() -> Iterator[BentoServer]:
    # no latency cap to speak of: the survivors always get their vectors, however slow the CPU
    with BentoServer("runners.embedding:Embedding", env={"ASKDB_EMBED_MAX_LATENCY_MS": "600000"}) as server:
        yield server


def gauge(url: str, name: str) -> float:
    return sample_sum(url, name, name)


async def until(url: str, what: str, check: Callable[[float], bool], timeout: float = 120) -> None:
    """Poll /metrics (in a thread, so the loop keeps serving the clients) until `check(gauge)`."""
    deadline = time.monotonic() + timeout
    while not check(value := await asyncio.to_thread(gauge, url, what)):
        assert time.monotonic() < deadline, f"{what} stayed at {value:g}"
        await asyncio.sleep(0.02)  # poll interval


async def scenario(url: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        big = asyncio.create_task(http.post("/embed", json={"texts": BIG}))
        await until(url, RUNNING, lambda v: v == len(BIG))
        bodies = [{"texts": [f"question {i}"]} for i in range(WAITING)]
        calls = [asyncio.create_task(http.post("/embed", json=b)) for b in bodies]
        await until(url, QUEUED, lambda v: v == WAITING)
        for task in calls[:LEAVING]:
            task.cancel()  # httpx closes the connection: the server sees the client leave
        await until(url, QUEUED, lambda v: v == WAITING - LEAVING)
        still_running = await asyncio.to_thread(gauge, url, RUNNING)
        assert still_running == len(BIG), "the large batch ended before the clients left: no proof"
        return [await big, *[await t for t in calls[LEAVING:]]]


@pytest.mark.parametrize("where", ["runner", "service"])
def test_a_call_whose_client_leaves_before_its_batch_is_not_encoded(
    where: str, request: pytest.FixtureRequest
) -> None:
    server: BentoServer = request.getfixturevalue("embedding_runner" if where == "runner" else "askdb")
    wait_idle(server.url)
    encoded = sample_sum(server.url, ENCODED, f"{ENCODED}_total")
    left = sample_sum(server.url, CANCELLED, f"{CANCELLED}_total", stage="queued")
    replies = asyncio.run(scenario(server.url))
    # The service's runner keeps the default 10 s cap: on a starved CPU a survivor may wait past it
    # behind the large batch and be refused (503), and then it is not encoded either.
    served = [r for r in replies[1:] if r.status_code == 200]
    assert replies[0].status_code == 200 and all(r.status_code in (200, 503) for r in replies[1:])
    if where == "runner":
        assert len(served) == WAITING - LEAVING
    vectors = [len(r.json()["embeddings"] if where == "service" else r.json()) for r in [replies[0], *served]]
    assert vectors == [len(BIG)] + [1] * len(served)
    wait_idle(server.url)
    assert sample_sum(server.url, ENCODED, f"{ENCODED}_total") - encoded == len(BIG) + len(served)
    assert sample_sum(server.url, CANCELLED, f"{CANCELLED}_total", stage="queued") - left == LEAVING
