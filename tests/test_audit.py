"""The audit trail (observability/audit.py): hash chain, tampering named by `askdb audit verify`,
several processes appending at once, rotation across files, torn lines. The live /ask records are
checked through the real server in tests/test_governance.py."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from observability.audit import GENESIS, AuditLog, AuditUnavailable, canonical, chain_hash, verify
from tests.servers import ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command, in its own process."""
    return subprocess.run(
        [sys.executable, str(ROOT / "askdb_cli.py"), "audit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def write_trail(path: Path, n: int = 6) -> list[dict]:
    log = AuditLog(path)
    return [log.append("ask", key="k", db="chinook", question=f"question {i}", row_count=i) for i in range(n)]


def test_records_chain_from_the_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = write_trail(path)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records and all(canonical(r) in lines for r in records)
    out = cli("verify", str(path))
    assert out.returncode == 0, out.stderr
    assert records[-1]["hash"] in out.stdout


def _tampered(path: Path, lines: list[str]) -> subprocess.CompletedProcess:
    path.write_text("".join(line + "\n" for line in lines))
    return cli("verify", str(path))


def test_each_kind_of_tampering_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path)
    good = path.read_text().splitlines()

    edited = json.loads(good[2])
    edited["row_count"] = 999
    resealed = {**edited, "hash": chain_hash(edited)}  # a forger who recomputes this line's hash
    forged = {**json.loads(good[1]), "question": "never asked"}
    forged["hash"] = chain_hash(forged)
    cases = {
        "edited": ([*good[:2], canonical(edited), *good[3:]], ":3:", "hash does not match"),
        "edited and resealed": ([*good[:2], canonical(resealed), *good[3:]], ":4:", "does not follow"),
        "reformatted": (
            [*good[:1], json.dumps(json.loads(good[1]), indent=None), *good[2:]],
            ":2:",
            "canonical",
        ),
        "inserted": ([*good[:2], canonical(forged), *good[2:]], ":3:", "does not follow"),
        "reordered": ([*good[:1], good[2], good[1], *good[3:]], ":2:", "does not follow"),
        "deleted in the middle": (good[:3] + good[4:], ":4:", "does not follow"),
        "first deleted": (good[1:], ":1:", "genesis"),
    }
    for name, (lines, where, why) in cases.items():
        out = _tampered(path, lines)
        assert out.returncode != 0, name
        assert where in out.stderr and why in out.stderr, (name, out.stderr)
    # the newest line deleted: the chain is still whole, the head file says one is missing
    out = _tampered(path, good[:-1])
    assert out.returncode != 0 and "ends at record 5 but record 6 was written" in out.stderr


def test_a_rewritten_chain_is_caught_by_an_anchored_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    anchor = write_trail(path, 4)[1]["hash"]  # printed by verify earlier and kept elsewhere
    assert cli("verify", str(path), "--expect", anchor).returncode == 0
    path.unlink()
    path.with_name("audit.jsonl.head").unlink()
    write_trail(path, 4)  # a whole new, self-consistent history (new timestamps, new hashes)
    assert cli("verify", str(path)).returncode == 0
    out = cli("verify", str(path), "--expect", anchor)
    assert out.returncode != 0 and "expected hash" in out.stderr


def test_processes_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    code = (
        "import sys; from observability.audit import AuditLog; log = AuditLog(sys.argv[1]); "
        "[log.append('ask', key=sys.argv[2], question=str(i)) for i in range(25)]"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), f"worker-{n}"], cwd=ROOT) for n in range(4)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, 101))
    assert {r["key"] for r in records} == {f"worker-{n}" for n in range(4)}
    assert cli("verify", str(path)).returncode == 0


def test_rotation_keeps_the_chain_verifiable_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=1500)
    for i in range(30):
        log.append("ask", question=f"question number {i}", sql="SELECT 1")
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) >= 3 and path in files
    out = cli("verify", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "record 30" in out.stdout
    later = [f for f in files if f != path][1]
    out = cli("verify", str(later))  # one rotated file alone does not start at the genesis
    assert out.returncode != 0 and "genesis" in out.stderr
    later.unlink()  # a whole file deleted from the directory
    out = cli("verify", str(tmp_path))
    assert out.returncode != 0 and "does not follow" in out.stderr


def test_a_torn_line_is_reported_and_the_next_record_chains_past_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    first = log.append("ask", question="before the crash")
    with path.open("a") as fh:
        fh.write('{"seq": 2, "question": "cut sh')  # the process died mid-write
    after = log.append("ask", question="after the restart")
    assert after["seq"] == 2 and after["prev"] == first["hash"]
    problems, last = verify(path)
    assert problems and ":2:" in problems[0] and "cut short" in problems[0]
    assert last == first


def test_an_unwritable_log_refuses_rather_than_drops(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(AuditUnavailable, match="could not be written"):
        AuditLog(blocker / "audit.jsonl").append("ask", question="q")
    assert AuditLog(None).append("ask", question="q") == {}  # ASKDB_AUDIT_LOG=off
