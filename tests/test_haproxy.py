"""deploy/local for real: `bentoml serve` replicas behind HAProxy, under steady load.

The tiny versioned service (tests/fixtures/versioned_service.py) answers with its release and
replica name, so every response says where it was served.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import bentoml
import httpx
import pytest

from deploy.local.deployment import free_port
from deploy.local.haproxy import HAProxy, ProxyConfig
from tests.fixtures.local_deploy import LocalDeploy
from tests.fixtures.steady_load import SteadyLoad
from tests.servers import BentoServer

RATE = 12.0  # requests/s: far below one replica's capacity even on a shared 2-core CPU
pytestmark = pytest.mark.timeout(600)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)  # poll interval
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def all_up(dep: LocalDeploy) -> bool:
    reps = dep.status()["replicas"]
    return all(r["haproxy_status"] == "UP" and r["alive"] for r in reps)


def replica_counts(url: str, n: int) -> collections.Counter:
    with bentoml.SyncHTTPClient(url, timeout=30) as client:
        return collections.Counter(client.version()["replica"] for _ in range(n))


@pytest.fixture(scope="module")
def rr3(tmp_path_factory: pytest.TempPathFactory):
    with LocalDeploy(tmp_path_factory.mktemp("rr3") / "state", replicas=3) as dep:
        yield dep


def test_roundrobin_spreads_evenly(rr3: LocalDeploy) -> None:
    wait_for(lambda: all_up(rr3), 60, "all replicas UP")
    counts = replica_counts(rr3.url, 30)
    assert sorted(counts.values()) == [10, 10, 10], counts


def test_weighted_roundrobin_follows_weights(tmp_path: Path) -> None:
    with LocalDeploy(tmp_path / "state", replicas=3, policy="weighted", weights="1,2,3") as dep:
        names = [r["name"] for r in dep.status()["replicas"]]
        counts = replica_counts(dep.url, 120)
    share = [counts[n] / 120 for n in names]
    for got, want in zip(share, [1 / 6, 2 / 6, 3 / 6], strict=True):
        assert abs(got - want) <= 0.02, (counts, names)


def test_leastconn_sends_to_the_idle_replica(tmp_path: Path) -> None:
    with LocalDeploy(tmp_path / "state", replicas=3, policy="leastconn") as dep:
        held: list[str] = []

        def hold() -> None:
            held.append(httpx.post(f"{dep.url}/hold", json={"seconds": 6}, timeout=30).json()["replica"])

        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        # Two replicas each have one request in flight; leastconn must pick the third every time.
        busy = wait_for(
            lambda: (
                [r["name"] for r in dep.status()["replicas"] if r["in_flight"] == 1]
                if sum(r["in_flight"] for r in dep.status()["replicas"]) == 2
                else None
            ),
            10,
            "two held requests in flight",
        )
        counts = replica_counts(dep.url, 12)
        for t in threads:
            t.join()
    assert len(set(busy)) == 2 and sorted(held) == sorted(busy)
    (idle,) = {r["name"] for r in dep.info["replicas"]} - set(busy)
    assert counts == {idle: 12}, counts


def test_kill9_replica_no_failures_and_back_within_30s(rr3: LocalDeploy) -> None:
    wait_for(lambda: all_up(rr3), 60, "all replicas UP")
    victim = rr3.status()["replicas"][1]
    with SteadyLoad(rr3.url, RATE) as load:
        time.sleep(3)  # steady traffic before the kill
        killed_at = time.monotonic()
        for pid in victim["pids"]:  # the arbiter and its worker: the whole replica dies at once
            os.kill(pid, signal.SIGKILL)
        back = wait_for(
            lambda: next(
                (o for o in load.outcomes if o.replica == victim["name"] and o.sent > killed_at), None
            ),
            30,
            f"{victim['name']} serving again",
        )
        recovered_s = back.done - killed_at
        time.sleep(2)
    after = next(r for r in rr3.status()["replicas"] if r["name"] == victim["name"])
    assert load.failures() == [], load.failures()[:5]
    assert after["restarts"] == 1 and after["pid"] != victim["pid"]
    assert len(victim["pids"]) >= 2 and recovered_s < 30
    print(f"kill -9: {len(load.outcomes)} requests, 0 failed, back in service after {recovered_s:.1f}s")


def test_sigterm_lets_in_flight_requests_finish(rr3: LocalDeploy) -> None:
    wait_for(lambda: all_up(rr3), 60, "all replicas UP")
    victim = rr3.status()["replicas"][0]
    results: list[dict] = []

    def call() -> None:
        resp = httpx.post(f"{rr3.url}/hold", json={"seconds": 4}, timeout=30)
        results.append({"status": resp.status_code, **resp.json()})

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    # HAProxy's own count of requests in flight on the victim (round robin: 2 of the 6).
    wait_for(lambda: int(rr3.api.servers()[victim["slot"]]["scur"]) == 2, 10, "2 requests in flight")
    os.kill(victim["pid"], signal.SIGTERM)  # what `kill` or a pod stop sends to the server
    for t in threads:
        t.join()
    assert [r["status"] for r in results] == [200] * 6, results
    # The victim answered its own in-flight calls (graceful stop), none were replayed elsewhere.
    assert sum(r["replica"] == victim["name"] for r in results) == 2, results


def test_upgrade_then_rollback_under_steady_load(tmp_path: Path) -> None:
    with LocalDeploy(tmp_path / "state", replicas=2) as dep, SteadyLoad(dep.url, RATE) as load:
        time.sleep(8)  # baseline window
        t0 = time.monotonic()
        reply = dep.upgrade("v2", "--dwell", "2")
        t1 = time.monotonic()
        time.sleep(4)  # after the upgrade: all from v2
        t2 = time.monotonic()
        back = dep.cli("rollback", "--dwell", "2")
        t3 = time.monotonic()
        time.sleep(3)
        load.stop()
    base, during, rolling = load.throughput(t0 - 6, t0), load.throughput(t0, t1), load.throughput(t2, t3)
    print(
        f"upgrade: {len(load.outcomes)} requests, {base:.2f} req/s before, {during:.2f} during upgrade "
        f"({t1 - t0:.1f}s), {rolling:.2f} during rollback ({t3 - t2:.1f}s)"
    )
    assert load.failures() == [], load.failures()[:5]
    assert abs(during / base - 1) <= 0.10 and abs(rolling / base - 1) <= 0.10, (base, during, rolling)
    after_upgrade = {o.version for o in load.outcomes if t1 < o.sent < t2}
    assert after_upgrade == {"v2"}
    assert {o.version for o in load.outcomes if t0 < o.sent < t1} == {"v1", "v2"}  # shared while shifting
    assert [e["fraction"] for e in reply["events"] if e["event"] == "shift"][-3:] == [0.1, 0.5, 1.0]
    assert {r["version"] for r in reply["replicas"]} == {"v2"} and reply["previous"] == "v1"
    assert {o.version for o in load.outcomes if o.sent > t3} == {"v1"}
    assert {r["version"] for r in back["replicas"]} == {"v1"}


def test_real_askdb_behind_the_same_haproxy_config(askdb: BentoServer, tmp_path: Path) -> None:
    """The session's real AskDB in one slot, a dead replica in another: calls all succeed."""
    cfg = ProxyConfig(port=free_port(), socket_path=tmp_path / "haproxy.sock", slots=2)
    proxy = HAProxy(cfg, tmp_path).start()
    try:
        proxy.api.set_addr("s0", "127.0.0.1", askdb.port)
        proxy.api.set_addr("s1", "127.0.0.1", free_port())  # nothing listens: a crashed replica
        for slot in ("s0", "s1"):
            proxy.api.set_weight(slot, 100)
            proxy.api.set_state(slot, "ready")
        with bentoml.SyncHTTPClient(f"http://127.0.0.1:{cfg.port}", timeout=300) as client:
            # Round robin sends half of these to the dead slot until its check fails: redispatched.
            outs = [client.generate(prompt="SELECT", max_new_tokens=2) for _ in range(4)]
            emb = client.embed(texts=["albums", "tracks"])
        stats = wait_for(lambda: (s := proxy.api.servers())["s1"]["status"] == "DOWN" and s, 15, "s1 DOWN")
    finally:
        proxy.stop()
    assert all(o["usage"]["completion_tokens"] >= 1 for o in outs)
    assert emb["dim"] > 0 and len(emb["embeddings"]) == 2
    # "UP 1/2" (one slow check on a loaded host) still serves; only DOWN or MAINT would not.
    assert stats["s0"]["status"].startswith("UP") and int(stats["s0"]["stot"]) >= 5


def test_runtime_api_refusals_raise(tmp_path: Path) -> None:
    """A rollout must stop on a refused command, not believe the weights moved."""
    proxy = HAProxy(ProxyConfig(port=free_port(), socket_path=tmp_path / "s.sock", slots=1), tmp_path).start()
    try:
        proxy.api.set_weight("s0", 10)
        proxy.api.set_addr("s0", "127.0.0.1", 5)
        for bad in (lambda: proxy.api.set_weight("s9", 1), lambda: proxy.api.set_state("s0", "bogus")):
            with pytest.raises(RuntimeError, match="haproxy"):
                bad()
        assert proxy.api.servers()["s0"]["uweight"] == "10"  # the good command did apply
    finally:
        proxy.stop()
