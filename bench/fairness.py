"""Fair share between tenants vs the FIFO it replaced, in the real engine, in one run.

    python -m bench.fairness [--seconds 60] [--slots 8] [--out bench/results]

In-process engine over a tiny random Llama (bench/tenants.py: steps of a few ms on a CPU, so slots
are scarce and a minute holds thousands of steps). FIFO is the same queue with every request under
one tenant name, which is what the engine did before tenants. Three measurements per mode:
- a light tenant's p50 latency (seconds and decode steps) alone, then next to a heavy tenant's 32
  backlogged streams;
- tokens served to two backlogged tenants with equal weights (16 streams vs 4) over `--seconds`,
  and Jain's index of the two;
- the same with weights 3:1 (16 streams each): the share they get.
Prints a table, writes fairness.json and fairness.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.tenants import Backlog, jain, light_latencies, tiny_llama
from runners.engine import Engine
from runners.model import LoadedModel
from runners.tenancy import Tenant


def as_tenant(mode: str, name: str, weight: float = 1.0) -> Tenant:
    return Tenant(name=name if mode == "fair" else "everyone", weight=weight if mode == "fair" else 1.0)


def p50(samples: list[tuple[float, int]]) -> tuple[float, float]:
    return statistics.median(s for s, _ in samples), statistics.median(n for _, n in samples)


def share(engine: Engine, a: Tenant, b: Tenant, streams: tuple[int, int], seconds: float) -> tuple[int, int]:
    with Backlog(engine, a, streams[0]) as la, Backlog(engine, b, streams[1]) as lb:
        la.wait_saturated()
        lb.wait_saturated()
        first = (la.tokens, lb.tokens)
        time.sleep(seconds)  # the measurement window itself
        return la.tokens - first[0], lb.tokens - first[1]


def measure(lm: LoadedModel, mode: str, slots: int, seconds: float) -> dict[str, Any]:
    def engine() -> Engine:
        return Engine(lm, slots=slots, context=256, prefill_chunk=64, max_waiting=1024, graphs=False)

    eng = engine()
    light = as_tenant(mode, "light")
    alone = p50(light_latencies(eng, light, runs=9))
    with Backlog(eng, as_tenant(mode, "heavy"), streams=32, lengths=(16, 48)) as heavy:
        heavy.wait_saturated()
        shared = p50(light_latencies(eng, light, runs=9))
    eng.close()
    eng = engine()
    equal = share(eng, as_tenant(mode, "a"), as_tenant(mode, "b"), (16, 4), seconds)
    eng.close()
    eng = engine()
    weighted = share(eng, as_tenant(mode, "gold", 3.0), as_tenant(mode, "plain", 1.0), (16, 16), seconds)
    eng.close()
    return {
        "mode": mode,
        "light_alone_p50_s": alone[0],
        "light_alone_p50_steps": alone[1],
        "light_shared_p50_s": shared[0],
        "light_shared_p50_steps": shared[1],
        "light_slowdown": shared[0] / alone[0],
        "equal_tokens": equal,
        "jain": jain(equal),
        "weighted_tokens": weighted,
        "weighted_share": weighted[0] / max(1, weighted[1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="saturated window per share measurement")
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    lm = tiny_llama()
    rows = [measure(lm, mode, args.slots, args.seconds) for mode in ("fifo", "fair")]
    print(
        "| mode | light p50 alone s (steps) | light p50 next to 32 heavy s (steps) | slowdown "
        "| tokens a:b (16 vs 4 streams) | Jain | gold:plain weights 3:1 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b = r["equal_tokens"]
        print(
            f"| {r['mode']} | {r['light_alone_p50_s']:.3f} ({r['light_alone_p50_steps']:.0f}) "
            f"| {r['light_shared_p50_s']:.3f} ({r['light_shared_p50_steps']:.0f}) "
            f"| {r['light_slowdown']:.2f}x | {a}:{b} | {r['jain']:.3f} | {r['weighted_share']:.2f}:1 |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fairness.json").write_text(
        json.dumps({"slots": args.slots, "seconds": args.seconds, "rows": rows})
    )
    plot(rows, args.out / "fairness.png")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    modes = [r["mode"] for r in rows]
    axes[0].bar(modes, [r["light_slowdown"] for r in rows])
    axes[0].axhline(1.5, color="red", linestyle="--")
    axes[0].set_title("light tenant p50 / alone")
    axes[1].bar(modes, [r["jain"] for r in rows])
    axes[1].axhline(0.95, color="red", linestyle="--")
    axes[1].set_ylim(0.5, 1.0)
    axes[1].set_title("Jain's index, equal weights")
    axes[2].bar(modes, [r["weighted_share"] for r in rows])
    axes[2].axhline(3.0, color="red", linestyle="--")
    axes[2].set_title("tokens gold:plain, weights 3:1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
