"""`python -m deploy.capacity BENCH.json --qps 20 --p95-ms 2000`: replicas for a target, from the
measured per-replica throughput in a benchmark JSON (bench/gpu or deploy.capacity.measure)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploy.capacity.plan import plan, points, served_rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.capacity", description=__doc__)
    p.add_argument("bench", type=Path, help="benchmark JSON with served rows per concurrency")
    p.add_argument("--qps", type=float, required=True, help="target requests per second, all replicas")
    p.add_argument("--p95-ms", type=float, required=True, help="latency target per request")
    p.add_argument("--headroom", type=float, default=0.7, help="fraction of measured throughput to plan on")
    p.add_argument("--spare", type=int, default=1, help="extra replicas to ride out a failure or preemption")
    p.add_argument("--peak-factor", type=float, default=2.0, help="peak / target QPS, for maxReplicas")
    p.add_argument("--shape", help="run to use when the JSON has several")
    p.add_argument("--variant", help="run to use when the JSON has several")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = p.parse_args(argv)
    rows = served_rows(json.loads(args.bench.read_text()), args.shape, args.variant)
    try:
        result = plan(
            rows,
            args.qps,
            args.p95_ms,
            headroom=args.headroom,
            spare=args.spare,
            peak_factor=args.peak_factor,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(f"{'conc':>5} {'req/s':>8} {'p50 ms':>8} {'tail ms':>8}  within target")
    for pt in points(rows):
        ok = "yes" if pt.tail_s * 1000 <= args.p95_ms else "no"
        ms = f"{pt.p50_s * 1000:>8.0f} {pt.tail_s * 1000:>8.0f}"
        print(f"{pt.concurrency:>5} {pt.requests_per_s:>8.3g} {ms}  {ok} ({pt.tail_name})")
    print()
    for step in result.steps:
        print("- " + step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
