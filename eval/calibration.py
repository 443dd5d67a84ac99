"""Reliability of /ask's `confidence`: accuracy per confidence bucket, and the expected calibration
error (ECE: the bucket-size-weighted gap between mean confidence and accuracy). A calibrated
confidence of 0.8 is right about 80% of the time. Empty for a model that reports no logprobs
(pipeline/confidence.py): its answers' confidence is null."""

from __future__ import annotations

import math
from collections.abc import Callable

from pipeline.confidence import statement_logprobs
from pipeline.generate import extract_sql


def _bucket(confidence: float, buckets: int) -> int:
    return min(int(confidence * buckets), buckets - 1)  # 1.0 belongs to the top bucket


def reliability(details: list[dict], buckets: int = 5) -> dict:
    """{"rows": [{"bucket", "n", "mean_confidence", "accuracy"}], "ece", "scored"} over the answers
    that carry a confidence (a 422 carries none)."""
    scored = [d for d in details if isinstance(d.get("confidence"), int | float)]
    rows, ece = [], 0.0
    for b in range(buckets):
        inside = [d for d in scored if _bucket(d["confidence"], buckets) == b]
        row: dict = {"bucket": f"{b / buckets:.1f}-{(b + 1) / buckets:.1f}", "n": len(inside)}
        row["mean_confidence"] = row["accuracy"] = None
        if inside:
            conf = sum(d["confidence"] for d in inside) / len(inside)
            acc = sum(bool(d["correct"]) for d in inside) / len(inside)
            ece += len(inside) / len(scored) * abs(conf - acc)
            row.update(mean_confidence=round(conf, 3), accuracy=round(acc, 3))
        rows.append(row)
    return {"rows": rows, "ece": round(ece, 4) if scored else None, "scored": len(scored)}


def table(report: dict) -> str:
    """The reliability table as text, or why there is none."""
    rel = report.get("reliability") or {}
    if not rel.get("scored"):
        return f"{report['label']}: no confidence reported (null until the LLM runner returns logprobs)"
    lines = [f"{report['label']}: reliability (ECE {rel['ece']})"]
    lines.append(f"{'confidence':<12} {'n':>4} {'mean':>6} {'acc':>6}")
    for row in rel["rows"]:
        mean = "-" if row["mean_confidence"] is None else f"{row['mean_confidence']:.2f}"
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2f}"
        lines.append(f"{row['bucket']:<12} {row['n']:>4} {mean:>6} {acc:>6}")
    return "\n".join(lines)


# --- comparing confidence definitions offline, on an in-process report (eval/inprocess.py keeps
# every generation's tokens and log-probabilities, so no rerun is needed) ---


def _sql_logprobs(generation: dict) -> list[float]:
    """Log-probabilities of the tokens inside the SQL statement (not fences, prose or the stop)."""
    tokens = [(t, lp) for t, lp in generation.get("tokens") or []]
    return statement_logprobs(tokens, extract_sql("".join(t for t, _ in tokens)))


def _mean(values: list[float]) -> float:
    return math.exp(sum(values) / len(values))


DEFINITIONS: dict[str, Callable[[list[float], list[float]], float]] = {
    "mean, all tokens (until 2026-12-08)": lambda every, sql: _mean(every),
    "mean, SQL tokens": lambda every, sql: _mean(sql),
    "min, SQL tokens (pipeline/confidence.py)": lambda every, sql: math.exp(min(sql)),
}


def compare(details: list[dict], buckets: int = 5) -> list[dict]:
    """Each definition's reliability over answered questions whose reply kept its tokens (the last
    generation wrote the SQL that ran), with the target's ratio: the accuracy of the highest bucket
    that holds an answer / accuracy over all questions (failures included)."""
    overall = sum(bool(d["correct"]) for d in details) / len(details) if details else 0.0
    out = []
    for name, rule in DEFINITIONS.items():
        scored = []
        for d in details:
            gens = d.get("generations") or []
            conf = None
            if d.get("status") == 200 and gens and gens[-1].get("tokens"):
                every = [lp for _, lp in gens[-1]["tokens"]]
                conf = round(rule(every, _sql_logprobs(gens[-1])), 4)
            scored.append({**d, "confidence": conf})
        rel = reliability(scored, buckets)
        # the highest bucket any answer reached: a definition whose scale tops out at 0.8 has its
        # most confident answers there, and an empty 0.8-1.0 says nothing about them
        top = next((r for r in reversed(rel["rows"]) if r["n"]), None)
        ratio = round(top["accuracy"] / overall, 3) if top and overall else None
        out.append(
            {
                "definition": name,
                "accuracy": round(overall, 4),
                "top_bucket": top["bucket"] if top else None,
                "top_to_overall": ratio,
                **rel,
            }
        )
    return out
