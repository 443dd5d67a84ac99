"""The /ask quality log: rotation, off switch, one file per process, feedback joined, and the live path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import bentoml
import httpx

from observability.quality_log import QualityLog, joined_asks, log_files, read_records
from tests.servers import ROOT, BentoServer


def test_rotation_keeps_newest_records_within_bounds(tmp_path: Path) -> None:
    log = QualityLog(tmp_path, max_bytes=2_000, backups=2)
    for i in range(200):
        log.ask(request_id=f"{i:032x}", question=f"question {i}", outcome="ok", latency_ms=float(i))
    log.close()
    files = log_files(tmp_path)
    assert len(files) == 3  # the live file and two rotations, older ones deleted
    assert all(f.stat().st_size <= 2_000 + 400 for f in files)
    ids = [int(r["request_id"], 16) for r in read_records(tmp_path)]
    assert ids == sorted(ids) and ids[-1] == 199  # oldest rotation first, newest record kept
    assert ids[0] > 0  # the oldest records were rotated away


def test_off_switch_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "q"
    monkeypatch.setenv("ASKDB_QUALITY_LOG", "off")
    monkeypatch.setenv("ASKDB_QUALITY_LOG_DIR", str(target))
    log = QualityLog.from_env()
    log.ask(request_id="a" * 32, question="q", outcome="ok")
    assert not log.enabled and not target.exists()


def test_feedback_joins_latest_score_and_skips_torn_lines(tmp_path: Path) -> None:
    log = QualityLog(tmp_path)
    log.ask(request_id="a" * 32, question="first", outcome="ok", latency_ms=5.0)
    log.ask(request_id="b" * 32, question="second", outcome="refused", latency_ms=7.0)
    log.feedback("a" * 32, 0.0)
    log.feedback("a" * 32, 1.0, "right after all")
    log.close()
    with next(iter(log_files(tmp_path))).open("a") as fh:
        fh.write('{"kind": "ask", "request_id": "cut sh')  # a crash mid-line
    asks = {r["question"]: r for r in joined_asks(tmp_path)}
    assert set(asks) == {"first", "second"}
    assert asks["first"]["feedback"] == 1.0 and asks["second"]["feedback"] is None


def test_each_process_writes_its_own_file(tmp_path: Path) -> None:
    code = (
        "import sys; from observability.quality_log import QualityLog; "
        "log = QualityLog(sys.argv[1]); "
        "[log.ask(request_id=f'{i:032x}', question=sys.argv[2]) for i in range(20)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"proc{n}"], cwd=ROOT) for n in range(3)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert len(log_files(tmp_path)) == 3
    lines = [r["question"] for r in read_records(tmp_path)]
    assert sorted(lines) == sorted([f"proc{n}" for n in range(3)] * 20)  # no interleaved or lost lines


def _log_dir() -> Path:
    """Where the session server writes (it inherits this environment; relative paths from the repo)."""
    if os.environ.get("ASKDB_QUALITY_LOG", "on").lower() in ("off", "0", "false", "no"):
        raise AssertionError("the quality log is turned off for this test run")
    return ROOT / os.environ.get("ASKDB_QUALITY_LOG_DIR", "logs/quality")


def test_live_ask_writes_one_record_and_feedback_joins(askdb: BentoServer) -> None:
    question = f"How many artists are there? ({uuid.uuid4().hex[:6]})"
    options = {"examples": 0, "max_attempts": 1, "candidates": 1, "answer": False}
    resp = httpx.post(f"{askdb.url}/ask", json={"question": question, "options": options}, timeout=900)
    assert resp.status_code in (200, 422), resp.text
    [record] = [r for r in joined_asks(_log_dir()) if r["question"] == question]
    assert record["db"] == "chinook" and record["latency_ms"] > 0 and record["attempts"] >= 1
    assert record["model"].startswith("smollm2") and record["provider"] == "bentoml"
    if resp.status_code == 200:
        body = resp.json()
        assert record["request_id"] == body["request_id"] and record["outcome"] == "ok"
        assert record["sql"] == body["sql"] and record["row_count"] == body["row_count"]
        assert record["completion_tokens"] == body["usage"]["completion_tokens"] > 0
    else:
        assert record["outcome"] == resp.json()["error"]["type"]
    assert set(record["stages_ms"]) >= {"schema", "generate"}

    with bentoml.SyncHTTPClient(askdb.url, timeout=60) as client:
        out = client.feedback(request_id=record["request_id"], score=0.25)
    assert out["recorded"] is True
    [joined] = [r for r in joined_asks(_log_dir()) if r["request_id"] == record["request_id"]]
    assert joined["feedback"] == 0.25
    assert json.dumps(joined)  # plain JSON all the way (the report reads it back)


def test_unwritable_directory_drops_records_without_failing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    log = QualityLog(blocker / "quality")  # mkdir under a file fails, like a read-only volume
    log.ask(request_id="a" * 32, question="q", outcome="ok")
    log.feedback("a" * 32, 1.0)
    assert log._warned and not (blocker / "quality").exists()
