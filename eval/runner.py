"""Run the test set against a running askdb service (POST /ask) and score it."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from eval import calibration, scorer
from pipeline import databases

# Ablations: the per-request `options` that switch pipeline steps off (see pipeline/chain.py AskOptions).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-examples": {"examples": 0},
    "no-repair": {"max_attempts": 1},
    "no-select": {"select": False},
    "no-ground": {"ground": False},
    "no-skeleton": {"skeleton": 0.0},
    "self-consistency": {"candidates": 4},
    "zero-shot": {"examples": 0, "max_attempts": 1},
    "grammar": {"grammar": True},
}


def ask(
    client: httpx.Client,
    url: str,
    item: dict,
    db: str,
    options: dict,
    timeout: float,
    headers: dict | None = None,
) -> dict:
    body = {"question": item["question"], "db": db, "max_rows": 1000, "answer": False, "options": options}
    t0 = time.perf_counter()
    try:
        resp = client.post(f"{url}/ask", json=body, timeout=timeout, headers=headers)
        data = resp.json()
        status = resp.status_code
    except (httpx.HTTPError, ValueError) as err:
        data, status = {"error": {"type": "client", "message": str(err), "sql": None}}, 0
    data["_wall_ms"] = (time.perf_counter() - t0) * 1000
    data["_status"] = status
    return data


def score_one(item: dict, reply: dict, gold_rows: list[list[Any]]) -> dict:
    ordered = bool(item.get("ordered"))
    ok = reply["_status"] == 200
    rows = reply.get("rows", []) if ok else []
    err = reply.get("error") if not ok else None
    if isinstance(err, list):  # BentoML's own 4xx body is a one-element list
        err = err[0] if err else None
    return {
        "id": item["id"],
        "level": item["level"],
        "question": item["question"],
        "gold_sql": item["sql"],
        "sql": reply.get("sql") if ok else (err or {}).get("sql") if isinstance(err, dict) else None,
        "status": reply["_status"],
        "error": None if ok else (err.get("type") if isinstance(err, dict) else str(err)),
        "message": None if ok or not isinstance(err, dict) else err.get("message"),
        "correct": ok and scorer.same_result(rows, gold_rows, ordered),
        "correct_lenient": ok and scorer.lenient_match(rows, gold_rows, ordered),
        "attempts": reply.get("attempts"),
        "latency_ms": round(reply.get("latency_ms") or reply["_wall_ms"], 1),
        "usage": reply.get("usage"),
        "confidence": reply.get("confidence"),  # null until the runner reports logprobs
        "examples": reply.get("examples") or [],  # the few-shot questions the prompt showed
        "rows": rows[:5],
        "gold_rows": gold_rows[:5],
    }


def summarise(label: str, options: dict, details: list[dict], model: str | None) -> dict:
    n = len(details)
    levels = sorted({d["level"] for d in details})
    lat = [d["latency_ms"] for d in details]
    errors: dict[str, int] = {}
    for d in details:
        if d["error"]:
            errors[d["error"]] = errors.get(d["error"], 0) + 1
    ok_attempts = [d["attempts"] for d in details if d["attempts"]]
    return {
        "label": label,
        "model": model,
        "options": options,
        "n": n,
        "correct": sum(d["correct"] for d in details),
        "accuracy": round(sum(d["correct"] for d in details) / n, 4) if n else 0.0,
        "accuracy_lenient": round(sum(d["correct_lenient"] for d in details) / n, 4) if n else 0.0,
        "by_level": {
            lv: round(
                sum(d["correct"] for d in details if d["level"] == lv)
                / max(1, sum(d["level"] == lv for d in details)),
                4,
            )
            for lv in levels
        },
        "answered": sum(d["status"] == 200 for d in details),
        "errors": errors,
        "mean_attempts": round(statistics.mean(ok_attempts), 2) if ok_attempts else None,
        "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
        "latency_ms_mean": round(statistics.mean(lat), 1) if lat else None,
        "reliability": calibration.reliability(details),
        "questions": details,
    }


def run(
    url: str,
    *,
    db: str = "chinook",
    label: str = "full",
    options: dict | None = None,
    ids: list[str] | None = None,
    limit: int | None = None,
    concurrency: int = 4,
    timeout: float = 600.0,
    items: list[dict] | None = None,
    key: str | None = None,
    testset: Path | None = None,
) -> dict:
    items = items if items is not None else select(scorer.load_testset(db, testset), ids, limit)
    database = databases.get(db)
    gold = {i["id"]: scorer.run_gold(database, i["sql"])[1] for i in items}
    options = options or {}
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with httpx.Client() as client, ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(lambda it: ask(client, url, it, db, options, timeout, headers), items))
    details = [score_one(it, rep, gold[it["id"]]) for it, rep in zip(items, replies, strict=True)]
    model = next((r.get("model") for r in replies if r.get("model")), None)
    return summarise(label, options, details, model)


def merge(reports: list[dict]) -> dict:
    """One report from reports of the same label, model and options over disjoint questions."""
    first = reports[0]
    for r in reports[1:]:
        if (r["label"], r["model"], r["options"]) != (first["label"], first["model"], first["options"]):
            raise ValueError(f"{r['label']}/{r['model']} does not match {first['label']}/{first['model']}")
    details = [d for r in reports for d in r["questions"]]
    ids = [d["id"] for d in details]
    if len(set(ids)) != len(ids):
        raise ValueError("the reports share questions")
    return summarise(first["label"], first["options"], sorted(details, key=lambda d: d["id"]), first["model"])


def select(items: list[dict], ids: list[str] | None = None, limit: int | None = None) -> list[dict]:
    if ids:
        items = [i for i in items if i["id"] in ids]
    return items[:limit] if limit else items


def table(reports: list[dict]) -> str:
    head = f"{'run':<14} {'model':<36} {'acc':>6} {'lenient':>8} {'easy':>6} {'medium':>6} {'hard':>6}"
    head += f" {'p50 ms':>8}"
    lines = [head, "-" * len(head)]
    for r in reports:
        lv = r["by_level"]
        lines.append(
            f"{r['label']:<14} {str(r['model'])[:36]:<36} {r['accuracy']:>6.2f} "
            f"{r['accuracy_lenient']:>8.2f} "
            f"{lv.get('easy', 0):>6.2f} {lv.get('medium', 0):>6.2f} {lv.get('hard', 0):>6.2f} "
            f"{r['latency_ms_p50'] or 0:>8.0f}"
        )
    return "\n".join(lines)


def write(report: dict | list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)  # whole or absent: `learn --before` may be waiting for this file
