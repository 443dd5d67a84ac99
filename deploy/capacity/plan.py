"""Replica arithmetic from measured per-replica throughput (bench JSON rows)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    """One measured operating point of one replica: closed-loop clients and what they got."""

    concurrency: int
    requests_per_s: float
    p50_s: float
    tail_s: float  # p95 if measured, else p99 (an upper bound on p95)
    tail_name: str


@dataclass(frozen=True)
class Plan:
    qps: float
    p95_ms: float
    headroom: float
    spare: int
    point: Point
    replicas_for_load: int
    replicas: int
    max_replicas: int
    in_flight_target: int
    steps: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def points(rows: list[dict[str, Any]]) -> list[Point]:
    out = []
    for r in rows:
        name = "p95_s" if "p95_s" in r else "p99_s"
        out.append(
            Point(
                int(r["concurrency"]),
                float(r["requests_per_s"]),
                float(r["p50_s"]),
                float(r[name]),
                name.removesuffix("_s"),
            )
        )
    return sorted(out, key=lambda p: p.concurrency)


def served_rows(
    bench: dict[str, Any] | list, shape: str | None = None, variant: str | None = None
) -> list[dict]:
    """Rows from bench/gpu's JSON ({"runs": [{"shape", "variant", "served": [...]}]}) or a bare list."""
    if isinstance(bench, list):
        return bench
    runs = [
        r for r in bench["runs"] if shape in (None, r.get("shape")) and variant in (None, r.get("variant"))
    ]
    if len(runs) != 1:
        names = [f"{r.get('shape')}/{r.get('variant')}" for r in bench["runs"]]
        raise ValueError(f"pick one run with --shape/--variant from {names}")
    return runs[0]["served"]


def plan(
    rows: list[dict[str, Any]],
    qps: float,
    p95_ms: float,
    *,
    headroom: float = 0.7,
    spare: int = 1,
    peak_factor: float = 2.0,
) -> Plan:
    """Best throughput point within the latency target, then replicas = ceil(qps / (rps * headroom))."""
    if not 0 < headroom <= 1:
        raise ValueError("headroom must be in (0, 1]")
    candidates = points(rows)
    fitting = [p for p in candidates if p.tail_s * 1000 <= p95_ms]
    if not fitting:
        best = min(candidates, key=lambda p: p.tail_s)
        raise ValueError(
            f"no measured point meets p95 <= {p95_ms:.0f} ms; the lowest tail latency is "
            f"{best.tail_s * 1000:.0f} ms ({best.tail_name} at concurrency {best.concurrency})"
        )
    point = max(fitting, key=lambda p: p.requests_per_s)
    usable = point.requests_per_s * headroom
    for_load = max(1, math.ceil(qps / usable))
    replicas = for_load + spare
    max_replicas = max(1, math.ceil(qps * peak_factor / usable)) + spare
    # Little's law: a replica at that point holds `concurrency` requests; aim below it by the headroom.
    in_flight = max(1, math.floor(point.concurrency * headroom))
    steps = [
        f"operating point: concurrency {point.concurrency} gives {point.requests_per_s:.3g} req/s per "
        f"replica at {point.tail_name} {point.tail_s * 1000:.0f} ms <= {p95_ms:.0f} ms "
        "(best throughput within target)",
        f"usable per replica = {point.requests_per_s:.3g} x headroom {headroom} = {usable:.3g} req/s",
        f"replicas for load = ceil({qps} / {usable:.3g}) = {for_load}",
        f"replicas = {for_load} + spare {spare} = {replicas}  (HPA minReplicas)",
        f"max replicas = ceil({qps} x peak {peak_factor} / {usable:.3g}) + {spare} = {max_replicas}  "
        f"(HPA maxReplicas)",
        f"in-flight target per pod = floor({point.concurrency} x {headroom}) = {in_flight}  "
        f"(HPA askdb_in_flight_requests averageValue)",
    ]
    return Plan(qps, p95_ms, headroom, spare, point, for_load, replicas, max_replicas, in_flight, steps)
