"""`askdb report`: Markdown + PNG summary of a quality log or a locust run, optionally compared.

    askdb report LOGDIR                       one log (or locust CSV prefix)
    askdb report BASELINE CANDIDATE           two logs / two load tests: the second against the first
    askdb report LOGDIR --split-at 2026-11-25T12:00:00   before vs after a moment (a deploy)
    askdb report LOGDIR --by model            one model version against another, from the same log

Writes OUT/report.md, OUT/latency.png, OUT/qps.png and OUT/outcomes.png. Ratios in the comparison
table are candidate / baseline.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt

from observability.report_data import (
    Summary,
    load_log,
    locust_prefix,
    summarize_locust,
    summarize_records,
)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _ratio(new: float | None, old: float | None) -> str:
    return "–" if new is None or not old else f"{new / old:.2f}x"


def _success(s: Summary) -> float | None:
    t = s.total
    return None if not t.requests else 100 * (t.requests - t.failures) / t.requests


def markdown(summaries: list[Summary], images: list[str]) -> str:
    out = ["# askdb report", ""]
    for s in summaries:
        out += [f"## {s.label}", "", f"source: `{s.source}`, {s.duration_s:,.1f} s", ""]
        out += [
            "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | tokens/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in s.rows:
            out.append(
                f"| {r.name} | {r.requests} | {r.failures} | {_f(r.qps)} | {_ms(r.p50)} | {_ms(r.p95)} "
                f"| {_ms(r.p99)} | {_f(r.tokens_per_s, 1)} |"
            )
        total = sum(s.outcomes.values())
        if total:
            out += ["", "| outcome | count | share |", "|---|---:|---:|"]
            for name, n in sorted(s.outcomes.items(), key=lambda kv: -kv[1]):
                out.append(f"| {name} | {n} | {100 * n / total:.1f}% |")
        if s.feedback:
            out += ["", f"feedback: {s.feedback['count']:.0f} scores, mean {s.feedback['mean']:.2f}"]
        out.append("")
    if len(summaries) == 2:
        base, cand = summaries
        b, c = base.total, cand.total
        out += [
            f"## {cand.label} vs {base.label}",
            "",
            f"| figure | {base.label} | {cand.label} | ratio |",
            "|---|---:|---:|---:|",
            f"| req/s | {_f(b.qps)} | {_f(c.qps)} | {_ratio(c.qps, b.qps)} |",
            f"| p50 ms | {_ms(b.p50)} | {_ms(c.p50)} | {_ratio(c.p50, b.p50)} |",
            f"| p95 ms | {_ms(b.p95)} | {_ms(c.p95)} | {_ratio(c.p95, b.p95)} |",
            f"| p99 ms | {_ms(b.p99)} | {_ms(c.p99)} | {_ratio(c.p99, b.p99)} |",
            f"| tokens/s | {_f(b.tokens_per_s, 1)} | {_f(c.tokens_per_s, 1)} "
            f"| {_ratio(c.tokens_per_s, b.tokens_per_s)} |",
            f"| success % | {_f(_success(base), 1)} | {_f(_success(cand), 1)} "
            f"| {_ratio(_success(cand), _success(base))} |",
            "",
        ]
    out += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(out) + "\n"


def _save(fig, ax, out: Path, name: str, **labels: str) -> str:
    ax.set(**labels)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def plot(summaries: list[Summary], out: Path) -> list[str]:
    fig, ax = plt.subplots(figsize=(8, 4))
    for s in summaries:
        for pct, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            pts = [(p.t, getattr(p, pct)) for p in s.timeline if getattr(p, pct) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{s.label} {pct}")
    names = [
        _save(fig, ax, out, "latency.png", xlabel="seconds from start", ylabel="latency (ms)",
              title="Latency percentiles over time")
    ]  # fmt: skip

    fig, ax = plt.subplots(figsize=(8, 4))
    for s in summaries:
        if s.timeline:
            ax.plot([p.t for p in s.timeline], [p.qps for p in s.timeline], label=s.label)
    names.append(
        _save(
            fig,
            ax,
            out,
            "qps.png",
            xlabel="seconds from start",
            ylabel="requests/s",
            title="Throughput over time",
        )
    )

    fig, ax = plt.subplots(figsize=(8, 4))
    kinds = sorted({k for s in summaries for k in s.outcomes})
    width = 0.8 / max(len(summaries), 1)
    for i, s in enumerate(summaries):
        total = sum(s.outcomes.values()) or 1
        xs = [k + i * width for k in range(len(kinds))]
        ax.bar(xs, [100 * s.outcomes.get(k, 0) / total for k in kinds], width, label=s.label)
    ax.set_xticks([k + width * (len(summaries) - 1) / 2 for k in range(len(kinds))], kinds)
    names.append(_save(fig, ax, out, "outcomes.png", ylabel="% of requests", title="Outcomes"))
    return names


def _summaries(args: argparse.Namespace) -> list[Summary]:
    summaries = []
    for path in args.sources:
        prefix = locust_prefix(path)
        if prefix is not None:
            summaries.append(summarize_locust(prefix, prefix.name))
            continue
        if not Path(path).is_dir():
            raise SystemExit(f"askdb report: {path} is neither a log directory nor a locust --csv prefix")
        recs = load_log(path)
        if args.split_at:
            cut = datetime.fromisoformat(args.split_at)
            cut = (cut if cut.tzinfo else cut.replace(tzinfo=UTC)).timestamp()
            summaries.append(summarize_records([r for r in recs if r["ts"] < cut], "before", path))
            summaries.append(summarize_records([r for r in recs if r["ts"] >= cut], "after", path))
        elif args.by:
            groups: dict[str, list] = {}
            for r in recs:
                groups.setdefault(str(r.get(args.by)), []).append(r)
            summaries += [summarize_records(g, f"{args.by}={k}", path) for k, g in sorted(groups.items())]
        else:
            summaries.append(summarize_records(recs, Path(path).name or path, path))
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="askdb report", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="quality-log directory or locust --csv prefix (1 or 2)")
    parser.add_argument("--out", default="report", help="output directory (default ./report)")
    parser.add_argument("--split-at", help="compare before/after this ISO time (UTC unless given)")
    parser.add_argument("--by", choices=["model", "provider", "db"], help="compare groups of one log")
    args = parser.parse_args(argv)
    if len(args.sources) > 2:
        parser.error("give one source, or two to compare (baseline first)")
    if len(args.sources) == 2 and (args.split_at or args.by):
        parser.error("--split-at and --by compare within one source; give only one")
    summaries = _summaries(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = plot(summaries, out)
    text = markdown(summaries, images)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out / 'report.md'} and {', '.join(images)}")
    return 0
