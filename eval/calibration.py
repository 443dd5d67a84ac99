"""Reliability of /ask's `confidence`: accuracy per confidence bucket, and the expected calibration
error (ECE: the bucket-size-weighted gap between mean confidence and accuracy). A calibrated
confidence of 0.8 is right about 80% of the time. Empty until the runner reports logprobs
(pipeline/confidence.py): every answer's confidence is null until then."""

from __future__ import annotations


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
