"""Summaries the report is drawn from, read from a quality log or from a locust CSV report.

Both sources end up as `Summary`: per-endpoint request counts, throughput and latency percentiles,
a time line (requests/s and latency percentiles per time bucket) and outcome counts, so the quality
log of production traffic and a load test print and plot the same way.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from observability.quality_log import joined_asks


@dataclass
class Row:
    name: str
    requests: int
    failures: int
    qps: float
    p50: float | None  # milliseconds
    p95: float | None
    p99: float | None
    tokens_per_s: float | None = None  # generated tokens per wall-clock second


@dataclass
class Point:
    t: float  # seconds since the start of the summary
    qps: float
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass
class Summary:
    label: str
    source: str
    duration_s: float
    rows: list[Row]
    timeline: list[Point] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    feedback: dict[str, float] = field(default_factory=dict)  # count, mean score

    @property
    def total(self) -> Row:
        return self.rows[-1]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (what locust reports too), q in 0..100."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ---- quality log -------------------------------------------------------------------------------


def _row(name: str, recs: list[dict[str, Any]], duration: float) -> Row:
    lat = [float(r["latency_ms"]) for r in recs if r.get("latency_ms") is not None]
    tokens = sum(int(r.get("completion_tokens") or 0) for r in recs)
    return Row(
        name=name,
        requests=len(recs),
        failures=sum(1 for r in recs if r.get("outcome") != "ok"),
        qps=len(recs) / duration,
        p50=percentile(lat, 50),
        p95=percentile(lat, 95),
        p99=percentile(lat, 99),
        tokens_per_s=tokens / duration,
    )


def _span(recs: list[dict[str, Any]]) -> tuple[float, float]:
    """First arrival and last completion of the records, in epoch seconds."""
    starts = [r["ts"] - (r.get("latency_ms") or 0) / 1000 for r in recs]
    return min(starts), max(r["ts"] for r in recs)


def summarize_records(recs: list[dict[str, Any]], label: str, source: str, buckets: int = 30) -> Summary:
    """Summary of /ask records (already filtered to one period or model); rows per model + total."""
    if not recs:
        return Summary(label, source, 0.0, [Row("total", 0, 0, 0.0, None, None, None, 0.0)])
    t0, t1 = _span(recs)
    duration = max(t1 - t0, 1e-3)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_model.setdefault(str(r.get("model")), []).append(r)
    rows = [_row(f"/ask {m}", group, duration) for m, group in sorted(by_model.items())]
    rows.append(_row("total", recs, duration))
    width = max(duration / buckets, 1.0)
    slots: dict[int, list[float]] = {}
    for r in recs:
        slots.setdefault(int((r["ts"] - t0) // width), []).append(float(r.get("latency_ms") or 0))
    timeline = [
        Point((i + 0.5) * width, len(v) / width, percentile(v, 50), percentile(v, 95), percentile(v, 99))
        for i, v in sorted(slots.items())
    ]
    scores = [float(r["feedback"]) for r in recs if r.get("feedback") is not None]
    feedback = {"count": len(scores), "mean": sum(scores) / len(scores)} if scores else {}
    outcomes = dict(Counter(str(r.get("outcome")) for r in recs))
    return Summary(label, source, duration, rows, timeline, outcomes, feedback)


def load_log(directory: str | Path) -> list[dict[str, Any]]:
    return [r for r in joined_asks(directory) if r.get("ts") is not None]


# ---- locust CSV --------------------------------------------------------------------------------


def locust_prefix(path: str | Path) -> Path | None:
    """The `--csv` prefix if `path` is one (or one of its files), else None."""
    p = Path(path)
    for suffix in ("_stats.csv", "_stats_history.csv", "_failures.csv"):
        if p.name.endswith(suffix):
            p = p.with_name(p.name[: -len(suffix)])
            break
    return p if p.with_name(p.name + "_stats.csv").is_file() else None


def _num(value: str | None) -> float | None:
    try:
        out = float(value) if value not in (None, "", "N/A") else None
    except ValueError:
        return None
    return out


def summarize_locust(prefix: Path, label: str) -> Summary:
    """Summary of `locust --csv PREFIX`: rows from PREFIX_stats.csv, time line from the history."""
    with prefix.with_name(prefix.name + "_stats.csv").open(newline="") as fh:
        stats = list(csv.DictReader(fh))
    history_path = prefix.with_name(prefix.name + "_stats_history.csv")
    history = []
    if history_path.is_file():
        with history_path.open(newline="") as fh:
            history = [h for h in csv.DictReader(fh) if h.get("Name") == "Aggregated"]
    rows = []
    for s in stats:
        name = "total" if s["Name"] == "Aggregated" else f"{s['Type']} {s['Name']}"
        rows.append(
            Row(
                name=name,
                requests=int(s["Request Count"]),
                failures=int(s["Failure Count"]),
                qps=_num(s["Requests/s"]) or 0.0,
                p50=_num(s["50%"]),
                p95=_num(s["95%"]),
                p99=_num(s["99%"]),
            )
        )
    rows.sort(key=lambda r: r.name == "total")  # the total row last
    timeline = []
    duration = 0.0
    if history:
        t0 = float(history[0]["Timestamp"])
        for h in history:
            t = float(h["Timestamp"]) - t0
            timeline.append(
                Point(t, _num(h["Requests/s"]) or 0.0, _num(h["50%"]), _num(h["95%"]), _num(h["99%"]))
            )
        duration = float(history[-1]["Timestamp"]) - t0
    total = rows[-1] if rows else None
    if total and not duration and total.qps:
        duration = total.requests / total.qps
    _add_tokens(prefix, rows, duration)
    outcomes = {"ok": total.requests - total.failures, "failed": total.failures} if total else {}
    return Summary(label, str(prefix), duration, rows, timeline, outcomes)


def _add_tokens(prefix: Path, rows: list[Row], duration: float) -> None:
    """Tokens/s from PREFIX_tokens.json (bench/locustfile.py writes it: endpoint -> generated tokens)."""
    path = prefix.with_name(prefix.name + "_tokens.json")
    if not path.is_file() or duration <= 0:
        return
    tokens = json.loads(path.read_text())
    for row in rows:
        name = row.name.split(" ", 1)[-1]
        if row.name == "total":
            row.tokens_per_s = sum(tokens.values()) / duration
        elif name in tokens:
            row.tokens_per_s = tokens[name] / duration
