"""Derived figures (ratios against the baselines), the printed table, JSON and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def derive(run: dict[str, Any], reference: list[dict[str, Any]] | None = None) -> None:
    """Add to each served row its ratios against (a) c=1 served, (b) in-process (this variant's, else
    `reference`: the plain runner's), (c) the roofline."""
    inproc = {r["batch"]: r for r in run.get("inprocess") or reference or []}
    served = run.get("served", [])
    single = next((r for r in served if r["concurrency"] == 1), None)
    for row in served:
        c = row["concurrency"]
        if single:
            row["speedup_vs_single"] = row["tokens_per_s"] / single["tokens_per_s"]
            row["p50_vs_single"] = row["p50_s"] / single["p50_s"]
        if c in inproc:
            row["serving_overhead"] = 1 - row["tokens_per_s"] / inproc[c]["tokens_per_s"]
        row["roofline_tokens_per_s"] = run["roofline"][str(c)]
        row["roofline_fraction"] = row["tokens_per_s"] / row["roofline_tokens_per_s"]
    for r in run.get("inprocess", []):
        r["roofline_fraction"] = r["tokens_per_s"] / run["roofline"][str(r["batch"])]


def table(run: dict[str, Any], reference: list[dict[str, Any]] | None = None) -> str:
    inproc = {r["batch"]: r for r in run.get("inprocess") or reference or []}
    head = (
        f"{run['shape']} [{run['variant']}] on {run['env']['gpu']}\n"
        f"{'conc':>5} {'tok/s':>9} {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'ttft s':>7} "
        f"{'x(a)':>6} {'p50/(a)':>7} "
        f"{'(b) tok/s':>10} {'ovh':>6} {'prefill s':>9} {'roof tok/s':>10} {'roof%':>6}"
    )
    lines = [head]
    by_c = {r["concurrency"]: r for r in run.get("served", [])}
    for c in sorted(set(by_c) | set(inproc)):
        s, b = by_c.get(c, {}), inproc.get(c, {})

        def f(d: dict, k: str, fmt: str) -> str:
            return format(d[k], fmt) if d.get(k) is not None else "-"

        roof = run["roofline"].get(str(c))
        frac = s.get("roofline_fraction", b.get("roofline_fraction"))
        lines.append(
            f"{c:>5} {f(s, 'tokens_per_s', '9.1f'):>9} {f(s, 'requests_per_s', '7.2f'):>7} "
            f"{f(s, 'p50_s', '7.2f'):>7} {f(s, 'p99_s', '7.2f'):>7} {f(s, 'ttft_p50_s', '7.3f'):>7} "
            f"{f(s, 'speedup_vs_single', '6.1f'):>6} "
            f"{f(s, 'p50_vs_single', '7.2f'):>7} {f(b, 'tokens_per_s', '10.1f'):>10} "
            f"{f(s, 'serving_overhead', '6.1%'):>6} {f(b, 'prefill_s', '9.3f'):>9} "
            f"{'-' if roof is None else format(roof, '10.0f'):>10} "
            f"{'-' if frac is None else format(frac, '6.1%'):>6}"
        )
    return "\n".join(lines)


def plots(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figs = {
        "throughput_vs_concurrency": ("concurrent clients / batch size", "output tokens/s"),
        "latency_vs_throughput": ("output tokens/s", "p50 latency (s)"),
        "roofline_fraction": ("concurrent clients / batch size", "fraction of bandwidth roofline"),
    }
    for name, (xlabel, ylabel) in figs.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in runs:
            label = f"{run['shape']} [{run['variant']}]"
            served = sorted(run.get("served", []), key=lambda r: r["concurrency"])
            inproc = sorted(run.get("inprocess", []), key=lambda r: r["batch"])
            if name == "throughput_vs_concurrency":
                for rows, key, style, kind in (
                    (served, "concurrency", "o-", "served"),
                    (inproc, "batch", "s--", "in-process"),
                ):
                    if rows:
                        xs_, ys_ = [r[key] for r in rows], [r["tokens_per_s"] for r in rows]
                        ax.plot(xs_, ys_, style, label=f"{label} {kind}")
                xs = sorted(int(k) for k in run["roofline"])
                ax.plot(xs, [run["roofline"][str(x)] for x in xs], ":", label=f"{run['shape']} roofline")
            elif name == "latency_vs_throughput" and served:
                ax.plot([r["tokens_per_s"] for r in served], [r["p50_s"] for r in served], "o-", label=label)
                for r in served:
                    ax.annotate(str(r["concurrency"]), (r["tokens_per_s"], r["p50_s"]), fontsize=7)
            elif name == "roofline_fraction":
                rows = served or inproc
                key = "concurrency" if served else "batch"
                ax.plot([r[key] for r in rows], [r["roofline_fraction"] for r in rows], "o-", label=label)
        if name != "latency_vs_throughput":
            ax.set_xscale("log", base=2)
        if name == "throughput_vs_concurrency":
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        gpu = runs[0]["env"]["gpu"] if runs else ""
        ax.set_title(f"{name.replace('_', ' ')} — {gpu} (random weights, EOS ignored)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write(runs: list[dict[str, Any]], meta: dict[str, Any], out: Path) -> Path:
    path = out / "gpu_bench.json"
    path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    return path
