"""Upgrades, rollbacks and a SIGTERM of `deploy.local up` keep every open stream: a retiring replica
stops taking requests and is stopped only once its streams have ended (deploy/local/deployment.py,
within ASKDB_DRAIN_TIMEOUT_S). 16 long streams and steady short requests through an upgrade, then
16 more through the rollback: 0 failed requests, 0 truncated streams (each ends with its
finish_reason and `data: [DONE]`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx

from tests.fixtures.local_deploy import LocalDeploy
from tests.fixtures.steady_load import SteadyLoad

STREAMS = 16
PIECES, INTERVAL_S = 16, 0.5  # 8 s a stream: longer than a rollout's steps, so replicas drain them


class Streams:
    """`n` streams of /stream opened now, each read to its end in a thread of its own."""

    def __init__(self, url: str, n: int) -> None:
        self.results: list[dict] = []
        self._threads = [threading.Thread(target=self._one, args=(url,)) for _ in range(n)]
        for t in self._threads:
            t.start()

    def _one(self, url: str) -> None:
        out: dict = {"events": 0, "finish_reason": None, "done": False, "error": None}
        try:
            body = {"pieces": PIECES, "interval": INTERVAL_S}
            with httpx.stream("POST", f"{url}/stream", json=body, timeout=120) as resp:
                out["status"] = resp.status_code
                for line in resp.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        out["done"] = True
                        continue
                    event = json.loads(line.removeprefix("data: "))
                    out["events"] += 1
                    out["finish_reason"] = event["finish_reason"] or out["finish_reason"]
                    out["replica"] = event["replica"]
        except httpx.HTTPError as err:
            out["error"] = repr(err)
        self.results.append(out)

    def join(self) -> list[dict]:
        for t in self._threads:
            t.join(180)
        return self.results


def complete(result: dict) -> bool:
    return (
        result.get("status") == 200
        and result["error"] is None
        and result["done"]
        and result["finish_reason"] == "stop"
        and result["events"] == PIECES + 1
    )


def wait_streaming(dep: LocalDeploy, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(r["in_flight"] for r in dep.status()["replicas"]) >= n:
            return
        time.sleep(0.2)  # HAProxy's count of open requests, polled
    raise TimeoutError(f"{n} streams not open within {timeout} s")


def test_upgrade_rollback_and_sigterm_keep_every_stream(tmp_path: Path) -> None:
    dep = LocalDeploy(tmp_path / "state", replicas=2, drain_timeout_s=120).start()
    try:
        with SteadyLoad(dep.url, 5) as load:
            first = Streams(dep.url, STREAMS)
            wait_streaming(dep, STREAMS)
            t0 = time.monotonic()
            dep.upgrade("v2", "--dwell", "1")
            upgraded = time.monotonic() - t0
            second = Streams(dep.url, STREAMS)
            wait_streaming(dep, STREAMS)
            t0 = time.monotonic()
            dep.cli("rollback", "--dwell", "1")
            rolled = time.monotonic() - t0
            load.stop()
        third = Streams(dep.url, STREAMS // 2)
        wait_streaming(dep, STREAMS // 2)
    finally:
        dep.stop()  # SIGTERM to `up`: drains every replica before stopping it
    results = {"upgrade": first.join(), "rollback": second.join(), "sigterm": third.join()}
    print(
        f"upgrade {upgraded:.1f} s, rollback {rolled:.1f} s; short requests: {len(load.outcomes)}, "
        f"failed {len(load.failures())}; streams complete: "
        + ", ".join(f"{k} {sum(map(complete, v))}/{len(v)}" for k, v in results.items())
    )
    assert load.failures() == [], load.failures()[:5]
    for phase, streams in results.items():
        assert all(map(complete, streams)), (phase, [s for s in streams if not complete(s)][:3])
    # the drained replicas really were the old release: the first streams all ran on v1 to the end
    assert {r["replica"].split("-")[0] for r in results["upgrade"]} == {"v1"}
    assert upgraded >= PIECES * INTERVAL_S * 0.5  # the rollout waited for the streams to drain


# The same through the real service (SmolLM streams on /v1): bench/drain.py, too slow for a 2-core CI.
