"""One key's request limit across real AskDB replicas behind HAProxy, with limits in a real Redis.

    python -m bench.limits [--replicas 3] [--rpm 60] [--minutes 2] [--failure open|closed]

Starts `deploy.local up` with `--replicas` full AskDB replicas (API, LLM and embedding runners
each) sharing one Redis, and a key limited to `--rpm` requests a minute. Clients send POST /schema
as that key as fast as they go (cheap: the limit, not the work, is measured) for `--minutes` whole
minutes, starting from a key that has not been seen. Then Redis is stopped for `--down` s (the
`--failure` behaviour: open, each replica limits on its own; closed, 503 with Retry-After) and
started again, without restarting a replica, for `--back` s. Prints a table and writes
bench/results/limits-<failure>.json: requests accepted in each minute, the most accepted in any
60 s window, 2xx per replica (HAProxy's counters), every status seen, and any 5xx other than the
fail-closed 503.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.fixtures.local_deploy import LocalDeploy
from tests.redis_server import RedisServer

KEY = "bench-limited-6f0d2c9a41e7b853"
CLIENTS = 6


def hammer(url: str, seconds: float) -> list[tuple[float, int, str, float]]:
    """(monotonic time answered, status, Retry-After, latency) of every request, `CLIENTS` closed
    loops."""
    seen: list[tuple[float, int, str, float]] = []

    async def client() -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as http:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sent = time.monotonic()
                try:
                    resp = await http.post("/schema", json={})
                    status, retry_after = resp.status_code, resp.headers.get("retry-after", "")
                except httpx.HTTPError:
                    status, retry_after = 0, ""
                seen.append((time.monotonic(), status, retry_after, time.monotonic() - sent))

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(CLIENTS)))

    asyncio.run(run())
    return sorted(seen)


def most_in_window(times: list[float], window: float = 60.0) -> int:
    """The most of `times` (sorted) inside any half-open window of `window` seconds."""
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def redis_up(dep: LocalDeploy) -> dict[str, list[str]]:
    """Each replica's own askdb_ratelimit_redis_up lines, scraped from its port (not through HAProxy)."""
    out = {}
    for r in dep.status()["replicas"]:
        text = httpx.get(f"http://127.0.0.1:{r['port']}/metrics", timeout=30).text
        out[r["name"]] = [line for line in text.splitlines() if line.startswith("askdb_ratelimit_redis_up")]
    return out


def served_by(dep: LocalDeploy) -> dict[str, int]:
    return {slot: int(row["hrsp_2xx"] or 0) for slot, row in dep.api.servers().items()}


def summary(seen: list[tuple[float, int, str, float]], t0: float) -> dict:
    """Counts by status; `most_in_60s` is by the time each answer arrived, so it is smeared by up to
    `latency_max_s` against the limiter's own clock (Redis's, at admission)."""
    ok = [t for t, status, _, _ in seen if status == 200]
    return {
        "statuses": dict(Counter(status for _, status, _, _ in seen)),
        "accepted": len(ok),
        "seconds": round(seen[-1][0] - t0, 2) if seen else 0.0,
        "retry_after": sorted({ra for _, s, ra, _ in seen if s != 200 and ra}),
        "most_in_60s": most_in_window(ok),
        "latency_max_s": round(max((lat for *_, lat in seen), default=0.0), 2),
        "_ok": ok,
    }


def measure(
    tmp: Path, replicas: int, rpm: int, minutes: int, failure: str, down_s: float, back_s: float
) -> dict:
    keys = [{"name": "limited", "key": KEY, "requests_per_minute": rpm}]
    with RedisServer(tmp / "redis") as redis_server:
        env = {
            "ASKDB_API_KEYS": json.dumps(keys),
            "ASKDB_REDIS_URL": redis_server.url,
            "ASKDB_REDIS_FAILURE": failure,
            "ASKDB_AUDIT_LOG": "off",
            "ASKDB_EXAMPLE_STORE": str(tmp / "examples"),
        }
        dep = LocalDeploy(
            tmp / "state", replicas=replicas, env=env, target="service:AskDB", ready_timeout_s=1200
        )
        started = time.monotonic()
        with dep:
            ready_s = time.monotonic() - started
            out: dict = {"replicas": replicas, "rpm": rpm, "failure": failure, "ready_s": round(ready_s, 1)}
            before = served_by(dep)
            t0 = time.monotonic()
            saturated = summary(hammer(dep.url, 60.0 * minutes), t0) if minutes else None
            if saturated:
                ok = saturated.pop("_ok")
                saturated["per_minute"] = [
                    sum(t0 + 60 * m <= t < t0 + 60 * (m + 1) for t in ok) for m in range(minutes)
                ]
                after = served_by(dep)
                saturated["per_replica"] = {
                    k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)
                }
            out["saturated"] = saturated

            out["redis_up_before"] = redis_up(dep)
            redis_server.stop()
            t0 = time.monotonic()
            out["redis_down"] = summary(hammer(dep.url, down_s), t0)
            out["redis_down"].pop("_ok")
            out["redis_up_down"] = redis_up(dep)

            redis_server.start()
            t0 = time.monotonic()
            back = hammer(dep.url, back_s)
            first_ok = next((t for t, status, *_ in back if status == 200), None)
            out["redis_back"] = summary(back, t0)
            out["redis_back"]["first_200_after_s"] = None if first_ok is None else round(first_ok - t0, 2)
            out["redis_back"].pop("_ok")
            out["redis_up_back"] = redis_up(dep)
    return out


def table(r: dict) -> str:
    lines = ["| phase | accepted | seconds | statuses | most in any 60 s (answers) | slowest answer s "]
    lines[0] += "| per minute | 2xx per HAProxy slot |"
    lines.append("|---|---:|---:|---|---:|---:|---|---|")
    for phase in ("saturated", "redis_down", "redis_back"):
        p = r.get(phase)
        if not p:
            continue
        lines.append(
            f"| {phase} | {p['accepted']} | {p['seconds']} | {p['statuses']} | {p['most_in_60s']} "
            f"| {p['latency_max_s']} | {p.get('per_minute', '')} | {p.get('per_replica', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--rpm", type=int, default=60)
    ap.add_argument("--minutes", type=int, default=2, help="saturated minutes from an unseen key")
    ap.add_argument("--failure", choices=("open", "closed"), default="open")
    ap.add_argument("--down", type=float, default=5.0, help="seconds with Redis stopped")
    ap.add_argument("--back", type=float, default=10.0, help="seconds after Redis returns")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="askdb-limits-") as tmp:
        result = measure(Path(tmp), args.replicas, args.rpm, args.minutes, args.failure, args.down, args.back)
    print(f"{args.replicas} AskDB replicas ready in {result['ready_s']} s; key limit {args.rpm}/min")
    print(table(result))
    for when in ("before", "down", "back"):
        print(f"askdb_ratelimit_redis_up per replica, Redis {when}: {result[f'redis_up_{when}']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"limits-{args.failure}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
