"""Rate limits in a real Redis (api/shared_limits.py): several workers (limiter instances) take from
one window, and a minute never holds more than the limit; three replicas of a service behind
HAProxy give a key its limit once, not three times; Redis stopped: the documented fail-open /
fail-closed behaviour, never a 500; Redis back: the limit holds again without a restart."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.ratelimit import RateLimiter
from api.shared_limits import SharedLimiter
from tests.fixtures.local_deploy import LocalDeploy
from tests.redis_server import RedisServer
from tests.servers import BentoServer

RPM = 60
KEY = "limited-3c9e1a7b5d2f4c6e"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def test_workers_share_one_window(redis_server: RedisServer) -> None:
    async def run() -> tuple[int, list]:
        workers = [SharedLimiter(redis_server.url) for _ in range(3)]
        decisions = [await workers[i % 3].aadmit("k", RPM, None) for i in range(RPM + 5)]
        await workers[0].acharge_tokens("t", 500, 100)  # 400 in debt: refused until repaid
        refused = await workers[1].aadmit("t", None, 100)
        return sum(d.allowed for d in decisions), [decisions[-1], refused]

    allowed, (last, debt) = asyncio.run(run())
    assert allowed == RPM  # a window: nothing comes back until the first admission is a minute old
    assert not last.allowed and last.limit == "requests_per_minute" and 59 <= last.retry_after_s <= 60
    assert not debt.allowed and debt.limit == "tokens_per_minute" and debt.retry_after_s >= 200


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_redis_down_then_back(redis_server: RedisServer, failure: str) -> None:
    async def run() -> tuple[list, list, list]:
        limiter = SharedLimiter(redis_server.url, failure=failure, fallback=RateLimiter())
        before = [(await limiter.aadmit("k", 5, None)).allowed for _ in range(6)]
        redis_server.stop()
        down = [await limiter.aadmit("k", 5, None) for _ in range(3)]
        redis_server.start()
        await asyncio.sleep(1.1)  # the limiter waits RETRY_S before trying a failed Redis again
        back = [(await limiter.aadmit("k", 5, None)).allowed for _ in range(6)]
        return before, down, back

    before, down, back = asyncio.run(run())
    assert before == [True] * 5 + [False]
    if failure == "open":  # this process's own buckets while Redis is down
        assert [d.allowed for d in down] == [True] * 3
    else:
        assert [(d.allowed, d.limit) for d in down] == [(False, "unavailable")] * 3
    assert back == [True] * 5 + [False]  # a fresh Redis: a fresh bucket, and the limit holds


def poll_status(url: str, headers: dict, status: int, timeout: float) -> float:
    """Seconds until POST `url` answers `status`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if httpx.post(url, json={}, headers=headers).status_code == status:
            return time.monotonic() - t0
        time.sleep(0.1)  # poll interval
    raise TimeoutError(f"{url} not {status} within {timeout} s")


def hammer(url: str, seconds: float, concurrency: int = 6) -> tuple[Counter, Counter]:
    """Requests as fast as `concurrency` clients go for `seconds`: statuses, and 200s per replica."""
    statuses: Counter = Counter()
    replicas: Counter = Counter()

    async def client() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                resp = await http.post("/version", json={})
                statuses[resp.status_code] += 1
                if resp.status_code == 200:
                    replicas[resp.json()["replica"]] += 1

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(concurrency)))

    asyncio.run(run())
    return statuses, replicas


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("gap_s", [1 / 128, 0.25, 1.0, 2.5])  # exact in binary: no float drift
def test_a_minute_never_holds_more_than_the_limit(gap_s: float) -> None:
    """Per process (the fallback): requests every `gap_s` for five minutes, from an unseen key."""
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    admitted: list[float] = []
    while clock.now < 1300.0:
        decision = limiter.admit("k", RPM, None)
        if decision.allowed:
            admitted.append(clock.now)
        else:
            assert decision.limit == "requests_per_minute" and decision.retry_after_s >= 1
        clock.now += gap_s
    for i, start in enumerate(admitted):  # any 60 s window, wherever it starts
        assert sum(t - start < 60 for t in admitted[i:]) <= RPM
    assert sum(t < 1060.0 for t in admitted) == min(RPM, math.ceil(60 / gap_s))  # the whole limit
    assert sum(1120.0 <= t < 1180.0 for t in admitted) == min(RPM, round(60 / gap_s))  # and steady


def expected(seconds: float) -> float:
    """A window: a key unseen for a minute gets its limit, and no more until a minute has passed."""
    assert seconds < 60
    return RPM


def test_three_replicas_behind_haproxy_share_a_keys_limit(tmp_path: Path, redis_server: RedisServer) -> None:
    keys = json.dumps([{"name": "limited", "key": KEY, "requests_per_minute": RPM}])
    env = {"ASKDB_API_KEYS": keys, "ASKDB_REDIS_URL": redis_server.url, "ASKDB_REDIS_FAILURE": "open"}
    with LocalDeploy(tmp_path / "state", replicas=3, env=env) as dep:
        t0 = time.monotonic()
        statuses, replicas = hammer(dep.url, 10)
        elapsed = time.monotonic() - t0
        print(f"shared: {dict(statuses)} in {elapsed:.1f} s, 200s per replica {dict(replicas)}")
        assert set(statuses) <= {200, 429}, statuses
        assert abs(statuses[200] - expected(elapsed)) <= 3, (statuses, elapsed)
        assert len(replicas) == 3  # all three served: the total is across replicas

        redis_server.stop()  # fail open: each replica limits on its own
        statuses, replicas = hammer(dep.url, 3)
        print(f"redis down: {dict(statuses)}, per replica {dict(replicas)}")
        assert set(statuses) <= {200, 429}, statuses  # never a 500
        assert statuses[200] > RPM + 3  # more than one shared window could give
        metrics = httpx.get(f"{dep.url}/metrics").text
        assert "askdb_ratelimit_redis_up 0.0" in metrics

        redis_server.start()
        time.sleep(1.2)  # past RETRY_S: the next request tries Redis again
        t0 = time.monotonic()
        statuses, _ = hammer(dep.url, 5)
        elapsed = time.monotonic() - t0
        print(f"redis back: {dict(statuses)} in {elapsed:.1f} s")
        assert abs(statuses[200] - expected(elapsed)) <= 3, (statuses, elapsed)


def test_fail_closed_answers_503_with_retry_after_never_500(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    keys = json.dumps([{"name": "limited", "key": KEY, "requests_per_minute": RPM}])
    env = {"ASKDB_API_KEYS": keys, "ASKDB_REDIS_URL": redis_server.url, "ASKDB_REDIS_FAILURE": "closed"}
    headers = {"Authorization": f"Bearer {KEY}"}
    with BentoServer("tests.fixtures.versioned_service:Versioned", env=env) as server:
        assert httpx.post(f"{server.url}/version", json={}, headers=headers).status_code == 200
        redis_server.stop()
        r = httpx.post(f"{server.url}/version", json={}, headers=headers)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert (
            r.json()["error"]["type"] == "unavailable" and "ASKDB_REDIS_URL" in r.json()["error"]["message"]
        )
        redis_server.start()
        back = poll_status(f"{server.url}/version", headers, 200, timeout=10)
        assert back < 3.0  # shared limits again without a restart
