"""Combine gpu_bench.json files from several runs on the same card into one report.

`python -m bench.gpu.merge OUT A.json B.json ...`: runs of the same shape and variant are joined
(in-process rows by batch size, served rows by concurrency; a later file wins a tie), figures are
re-derived, and the table, JSON and PNG plots are written to OUT. Refuses files from different GPUs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.gpu import report


def _join(rows: list[dict], more: list[dict], key: str) -> list[dict]:
    merged = {r[key]: r for r in rows}
    merged.update({r[key]: r for r in more})
    return [merged[k] for k in sorted(merged)]


def merge(paths: list[Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    gpus, sources = set(), []
    for path in paths:
        data = json.loads(path.read_text())
        gpus.add(data["meta"]["env"]["gpu"])
        sources.append({"file": str(path), "args": data["meta"]["args"]})
        for run in data["runs"]:
            key = (run["shape"], run["variant"])
            have = runs.setdefault(key, {**run, "inprocess": [], "served": [], "roofline": {}})
            have["inprocess"] = _join(have["inprocess"], run.get("inprocess") or [], "batch")
            have["served"] = _join(have["served"], run.get("served") or [], "concurrency")
            have["roofline"] = {**have["roofline"], **run["roofline"]}
    if len(gpus) > 1:
        raise SystemExit(f"runs come from different cards: {sorted(gpus)}; compare like with like")
    out = list(runs.values())
    for run in out:
        plain = next((r for r in out if r["shape"] == run["shape"] and r["inprocess"]), None)
        reference = None if run["inprocess"] else (plain or {}).get("inprocess")
        run["reference_inprocess"] = reference
        report.derive(run, reference)
    return out, {"merged_from": sources, "env": out[0]["env"] if out else {}}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    runs, meta = merge([Path(p) for p in argv[1:]])
    report.write(runs, meta, out)
    report.plots(runs, out)
    print("\n\n".join(report.table(r, r.get("reference_inprocess")) for r in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
