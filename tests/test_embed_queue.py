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

from tests.conftest import TEST_ENV, state_env
from tests.metrics_util import sample_sum
from tests.servers import BentoServer

QUEUED, RUNNING = "askdb_embed_rows_queued", "askdb_embed_rows_running"
ENCODED, CANCELLED = "askdb_embed_rows", "askdb_embed_cancelled"
BIG = ["a long text about databases and their tables " * 40] * 16  # 256 tokens each: ~5 s on 2 CPU cores
WAITING, LEAVING = 8, 5


# No latency cap to speak of: the survivors always get their vectors, however slow the CPU.
NO_CAP = {"ASKDB_EMBED_MAX_LATENCY_MS": "600000"}


@pytest.fixture(scope="module")
def embedding_runner() -> Iterator[BentoServer]:
    with BentoServer("runners.embedding:Embedding", env=NO_CAP) as server:
        yield server


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """A service of this module's own, not the session's: a cancelled call leaves BentoML's
    bentoml_service_request_in_progress raised (seen on the API and the runner, 2026-12-07), which
    would stall every later test that waits for the session server to be idle."""
    env = {**TEST_ENV, **state_env(tmp_path_factory.mktemp("embed-queue")), **NO_CAP}
    with BentoServer("service:AskDB", env=env) as server:
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
    server: BentoServer = request.getfixturevalue("embedding_runner" if where == "runner" else "service")
    encoded = sample_sum(server.url, ENCODED, f"{ENCODED}_total")
    left = sample_sum(server.url, CANCELLED, f"{CANCELLED}_total", stage="queued")
    replies = asyncio.run(scenario(server.url))
    assert [r.status_code for r in replies] == [200] * (1 + WAITING - LEAVING)
    vectors = [len(r.json()["embeddings"] if where == "service" else r.json()) for r in replies]
    assert vectors == [len(BIG)] + [1] * (WAITING - LEAVING)
    # every call still open has been answered, and texts are counted before their answers are sent
    assert sample_sum(server.url, ENCODED, f"{ENCODED}_total") - encoded == len(BIG) + WAITING - LEAVING
    assert sample_sum(server.url, CANCELLED, f"{CANCELLED}_total", stage="queued") - left == LEAVING
