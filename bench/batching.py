"""Batching on vs off for /embed (BentoML's adaptive batching vs max_batch_size=1) and /generate
(the LLM engine's shared decode steps vs one slot), in one run.

    python -m bench.batching [--concurrency 1 4 16 32] [--endpoints /embed /generate] [--out bench/results]

Starts a real `bentoml serve service:AskDB` per mode in turn (same machine, same code, only the
embedding runner's max batch size and the engine's slots differ), drives each with closed-loop clients,
prints a table, writes batching.json and batching.png. Absolute numbers on shared machines are
noise; the ratio is the figure.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from bench.loadgen import measure
from runners import device
from tests.servers import BentoServer

MODES = {
    "batched": {},
    "unbatched": {"ASKDB_EMBED_MAX_BATCH_SIZE": "1", "ASKDB_LLM_SLOTS": "1"},
}
BASELINE = "unbatched"
ONLY: dict[str, set[str]] = {}  # modes that change only some endpoints
QUESTIONS = [
    "How many albums does each artist have?",
    "List the customers from Brazil.",
    "Which genre has the most tracks?",
    "What is the total revenue per country?",
    "Who is the manager of each employee?",
    "Show the ten longest tracks.",
]


def _workloads(gen_tokens: int) -> dict[str, dict[str, Any]]:
    return {
        "/embed": {
            "body": lambda i: {"texts": [QUESTIONS[i % len(QUESTIONS)] + f" (#{i})"]},
            "per_client": 8,
            "tokens": lambda r: 0,
        },
        "/generate": {
            "body": lambda i: {
                "prompt": f"Question {i}: {QUESTIONS[i % len(QUESTIONS)]}\nSQL:",
                "max_new_tokens": gen_tokens,
            },
            "per_client": 2,
            "tokens": lambda r: r["usage"]["completion_tokens"],
        },
    }


def run(concurrency: list[int], gen_tokens: int, endpoints: list[str]) -> list[dict[str, Any]]:
    rows = []
    workloads = {p: w for p, w in _workloads(gen_tokens).items() if p in endpoints}
    for mode, env in MODES.items():
        paths = [p for p in workloads if p in ONLY.get(mode, workloads)]
        if not paths:
            continue
        with BentoServer("service:AskDB", env={"BENTOML_DO_NOT_TRACK": "true", **env}) as server:
            for path in paths:
                w = workloads[path]
                for c in concurrency:
                    row = measure(server.url, path, w["body"], c, c * w["per_client"], w["tokens"])
                    rows.append({"mode": mode, "endpoint": path, **row})
                    print(
                        f"{mode:9s} {path:9s} c={c:3d} {row['rps']:8.1f} req/s  p50 {row['p50_ms']:8.1f} ms",
                        flush=True,
                    )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """One line per endpoint and concurrency: each mode's req/s and p50/p95, its gain over unbatched."""
    by = {(r["mode"], r["endpoint"], r["concurrency"]): r for r in rows}
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    others = [m for m in modes if m != BASELINE]
    head = ["endpoint", "clients"] + [f"{m} req/s" for m in modes] + [f"{m} gain" for m in others]
    head += [f"{m} p50/p95 ms" for m in modes]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for path, c in sorted({(r["endpoint"], r["concurrency"]) for r in rows}):
        got = {m: by.get((m, path, c)) for m in modes}
        base = got.get(BASELINE)
        cells = [path, str(c)]
        cells += [f"{r['rps']:.1f}" if r else "-" for r in got.values()]
        cells += [f"{got[m]['rps'] / base['rps']:.1f}x" if got[m] and base else "-" for m in others]
        cells += [f"{r['p50_ms']:.0f}/{r['p95_ms']:.0f}" if r else "-" for r in got.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = sorted({r["endpoint"] for r in rows})
    fig, axes = plt.subplots(1, len(endpoints), figsize=(6 * len(endpoints), 4), squeeze=False)
    for ax, path_ in zip(axes[0], endpoints, strict=True):
        for mode in MODES:
            pts = sorted(
                (r["concurrency"], r["rps"]) for r in rows if r["endpoint"] == path_ and r["mode"] == mode
            )
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=mode)
        ax.set(title=f"{path_} throughput", xlabel="concurrent clients", ylabel="requests/s", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--gen-tokens", type=int, default=16)
    endpoints = ["/embed", "/generate"]
    parser.add_argument("--endpoints", nargs="+", choices=endpoints, default=endpoints)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    rows = run(args.concurrency, args.gen_tokens, args.endpoints)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "gen_tokens": args.gen_tokens,
        "embed_dtype": str(device.pick("embed")[1]).removeprefix("torch."),
    }
    (args.out / "batching.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    plot(rows, args.out / "batching.png")
    print(table(rows))
    print(f"wrote {args.out / 'batching.json'} and {args.out / 'batching.png'}")


if __name__ == "__main__":
    main()
