"""`askdb report`: figures from a log whose answers are known, comparisons, and real PNG files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from observability.quality_log import QualityLog
from tests.servers import ROOT

ASKDB = Path(sys.executable).with_name("askdb")  # the console script `make setup` installs
T0 = 1_800_000_000.0


def write_log(directory: Path, model: str, scale: float, start: float = T0, n: int = 100) -> None:
    """n /ask records one second apart; latencies scale*1 .. scale*n ms; 10 tokens each; 1 in 10 refused."""
    log = QualityLog(directory)
    for i in range(1, n + 1):
        log.ask(
            request_id=f"{model}{i:04d}".ljust(32, "0")[:32],
            ts=start + i,
            question=f"q{i}",
            db="chinook",
            model=model,
            outcome="refused" if i % 10 == 0 else "ok",
            attempts=1,
            latency_ms=scale * i,
            completion_tokens=10,
        )
    log.feedback(f"{model}0001".ljust(32, "0")[:32], 1.0)
    log.close()


def report(*args: str, out: Path) -> str:
    cmd = [str(ASKDB)] if ASKDB.exists() else [sys.executable, "-m", "askdb_cli"]
    done = subprocess.run(
        [*cmd, "report", *args, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    text = (out / "report.md").read_text()
    assert done.stdout.startswith(text.rstrip("\n")[:40])
    return text


def row(text: str, name: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def assert_pngs(out: Path) -> None:
    for name in ("latency.png", "qps.png", "outcomes.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(out / name).shape
        assert width >= 400 and height >= 200


def test_single_log_figures(tmp_path: Path) -> None:
    write_log(tmp_path / "log", "m1", scale=1.0)
    text = report(str(tmp_path / "log"), out=tmp_path / "out")
    # 100 requests between t0 (first arrival, 1 ms before ts=1) and t=100: ~99 s
    _, requests, failures, qps, p50, p95, p99, tps = row(text, "total")
    assert (requests, failures, p50, p95, p99) == ("100", "10", "50", "95", "99")
    assert float(qps) == pytest.approx(100 / 99, abs=0.01)
    assert float(tps) == pytest.approx(1000 / 99, abs=0.1)
    assert row(text, "refused")[1:] == ["10", "10.0%"]
    assert "feedback: 1 scores, mean 1.00" in text
    assert_pngs(tmp_path / "out")


def test_two_logs_compare_with_ratios(tmp_path: Path) -> None:
    write_log(tmp_path / "v1", "m1", scale=1.0)
    write_log(tmp_path / "v2", "m2", scale=2.0)
    text = report(str(tmp_path / "v1"), str(tmp_path / "v2"), out=tmp_path / "out")
    assert "## v2 vs v1" in text
    assert row(text, "p95 ms") == ["p95 ms", "95", "190", "2.00x"]
    assert row(text, "success %") == ["success %", "90.0", "90.0", "1.00x"]
    assert_pngs(tmp_path / "out")


def test_split_by_model_and_by_time(tmp_path: Path) -> None:
    write_log(tmp_path / "log", "m1", scale=1.0)
    write_log(tmp_path / "log", "m2", scale=3.0, start=T0 + 1000)
    by_model = report(str(tmp_path / "log"), "--by", "model", out=tmp_path / "a")
    assert row(by_model, "p99 ms") == ["p99 ms", "99", "297", "3.00x"]
    by_time = report(str(tmp_path / "log"), "--split-at", "2027-01-15T08:10:00", out=tmp_path / "b")
    # T0 = 2027-01-15T08:00:00Z: everything of m1 is before, everything of m2 after
    assert "## after vs before" in by_time and row(by_time, "p50 ms") == ["p50 ms", "50", "150", "3.00x"]


def test_bad_source_is_a_clear_error(tmp_path: Path) -> None:
    cmd = [str(ASKDB)] if ASKDB.exists() else [sys.executable, "-m", "askdb_cli"]
    done = subprocess.run([*cmd, "report", str(tmp_path / "nope")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode != 0 and "neither a log directory nor a locust" in done.stderr
