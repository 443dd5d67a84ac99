"""bench/locustfile.py: a short, bounded headless locust run against the session server, then its CSV
report through `askdb report` into the same Markdown + PNG as the quality log."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT, BentoServer

LOCUST = Path(sys.executable).with_name("locust")


def test_headless_run_and_report(askdb: BentoServer, tmp_path: Path) -> None:
    prefix = tmp_path / "load"
    env = {
        **os.environ,
        # /ask takes seconds to minutes on a CPU runner: the bounded run exercises the two LLM routes;
        # requests still running when the time is up finish (stop-timeout) but are not in the CSV
        "ASKDB_LOCUST_WEIGHTS": "ask=0,generate=1,chat=1",
        "ASKDB_LOCUST_TOKENS": "4",
        "ASKDB_LOCUST_WAIT": "0,0.2",
    }
    cmd = [
        str(LOCUST), "-f", "bench/locustfile.py", "--headless", "--host", askdb.url,
        "-u", "2", "-r", "2", "-t", "60s", "--stop-timeout", "120", "--csv", str(prefix), "--only-summary",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    with (tmp_path / "load_stats.csv").open() as fh:
        stats = {r["Name"]: r for r in csv.DictReader(fh)}
    for name in ("/generate", "/v1/chat/completions"):
        assert int(stats[name]["Request Count"]) >= 1, stats.keys()
        assert int(stats[name]["Failure Count"]) == 0, (tmp_path / "load_failures.csv").read_text()
    tokens = json.loads((tmp_path / "load_tokens.json").read_text())
    assert tokens["/generate"] >= int(stats["/generate"]["Request Count"])  # at least 1 token each

    out = tmp_path / "report"
    report = subprocess.run(
        [sys.executable, "-m", "askdb_cli", "report", str(prefix), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    [gen_row] = [line for line in text.splitlines() if line.startswith("| POST /generate |")]
    cells = [c.strip() for c in gen_row.strip("|").split("|")]
    assert cells[1] == stats["/generate"]["Request Count"] and float(cells[7]) > 0  # tokens/s
    assert "| total |" in text
    for png in ("latency.png", "qps.png", "outcomes.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
