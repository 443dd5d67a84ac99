"""Audit trail: one append-only, hash-chained JSON line per /ask (and per example decision).

Each record carries `seq` (1, 2, ...), `prev` (the previous record's hash; the first record's is
GENESIS) and `hash` = SHA-256 of the record's canonical JSON without `hash` (sorted keys, no spaces),
and is written in exactly that canonical form. `askdb audit verify PATH` recomputes the chain and
names the first line that was edited, inserted, reordered or deleted. Deleting the newest lines
leaves a shorter valid chain, so each append also rewrites a small head file (`<log>.head`: the
last seq and hash) that verify compares with; against someone who can rewrite both, keep a hash
printed by verify somewhere else and pass it back with `--expect HASH`.

Several worker processes append to one file: an exclusive `flock` on `<log>.lock` makes reading the
last record and appending the next one a single step, and each line goes out in one `write` with
`fsync`. A line a crash cut short stays (append-only) and verify reports it; the next record chains
to the last whole one. Rotation (`ASKDB_AUDIT_MAX_BYTES`) renames the live file to
`<stem>.<first seq, 12 digits><suffix>`; the chain continues into the new file, so verifying the
directory checks it across files. Nothing is ever deleted here.

Configuration (environment):
  ASKDB_AUDIT_LOG         path of the live file, default logs/audit/audit.jsonl; "off" disables it
  ASKDB_AUDIT_MAX_BYTES   rotate past this size (default 100000000; 0: never)
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import settings

GENESIS = hashlib.sha256(b"askdb audit trail v1").hexdigest()
TAIL_BYTES = 65536  # read back from the end of the file to find the last record


class AuditUnavailable(OSError):
    """The record could not be written; the request it describes must not be answered."""


def canonical(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def chain_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def _last_record(path: Path) -> tuple[dict[str, Any] | None, bool]:
    """(the last whole record of `path`, whether the file ends inside a line)."""
    if not path.is_file() or path.stat().st_size == 0:
        return None, False
    with path.open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        start = size
        while True:
            start = max(0, start - TAIL_BYTES)
            fh.seek(start)
            chunk = fh.read(size - start)
            lines = chunk.split(b"\n")
            torn = not chunk.endswith(b"\n")
            for line in reversed(lines[1:] if start else lines):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "hash" in record:
                    return record, torn
            if start == 0:
                return None, torn


class AuditLog:
    def __init__(self, path: str | Path | None, max_bytes: int = 100_000_000) -> None:
        self.path = Path(path) if path else None
        self.max_bytes = max_bytes
        self._lock = threading.Lock()  # flock does not exclude threads sharing one open file

    @classmethod
    def from_env(cls) -> AuditLog:
        s = settings.load()
        return cls(s.audit_log, s.audit_max_bytes) if s.audit_enabled() else cls(None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def files(self) -> list[Path]:
        assert self.path is not None
        rotated = sorted(self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}"))
        return [p for p in rotated if p != self.path and p.suffix == self.path.suffix] + [self.path]

    def _previous(self) -> tuple[dict[str, Any] | None, bool]:
        """(the newest whole record, whether the live file ends inside a line)."""
        live_torn = False
        for path in reversed(self.files()):
            record, torn = _last_record(path)
            live_torn = live_torn or (torn and path == self.path)
            if record is not None:
                return record, live_torn
        return None, live_torn

    def _rotate(self) -> None:
        assert self.path is not None
        with self.path.open(encoding="utf-8", errors="replace") as fh:
            first = json.loads(fh.readline() or "{}").get("seq", 0)
        self.path.rename(self.path.with_name(f"{self.path.stem}.{int(first):012d}{self.path.suffix}"))

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Write one record (seq, ts, prev and hash added) and return it; AuditUnavailable on failure."""
        if self.path is None:
            return {}
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                    return self._append_locked(kind, fields)
        except OSError as err:
            raise AuditUnavailable(f"the audit log {self.path} could not be written: {err}") from None

    def _append_locked(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        assert self.path is not None
        if self.max_bytes and self.path.is_file() and self.path.stat().st_size >= self.max_bytes:
            self._rotate()
        last, torn = self._previous()
        record = {
            "seq": int(last["seq"]) + 1 if last else 1,
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "kind": kind,
            **fields,
            "prev": last["hash"] if last else GENESIS,
        }
        record["hash"] = chain_hash(record)
        line = ("\n" if torn else "") + canonical(record) + "\n"  # a torn line is ended, not overwritten
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        head = self.path.with_name(self.path.name + ".head")
        tmp = head.with_name(head.name + ".tmp")
        tmp.write_text(json.dumps({"seq": record["seq"], "hash": record["hash"]}) + "\n")
        tmp.replace(head)
        return record


_trail: AuditLog | None = None


def trail() -> AuditLog:
    """This process's audit log, from the environment."""
    global _trail
    if _trail is None:
        _trail = AuditLog.from_env()
    return _trail


# --- verification ---


def audit_files(path: Path) -> list[Path]:
    """The files of a trail: one file, or every *.jsonl of a directory in chain order."""
    if path.is_file():
        return [path]

    def first_seq(p: Path) -> int:
        with p.open(encoding="utf-8", errors="replace") as fh:
            try:
                return int(json.loads(fh.readline()).get("seq", 0))
            except (ValueError, AttributeError):
                return 0

    return sorted(path.glob("*.jsonl"), key=lambda p: (first_seq(p), p.name))


def _lines(files: list[Path]) -> Iterator[tuple[Path, int, str]]:
    for path in files:
        with path.open(encoding="utf-8", errors="replace", newline="\n") as fh:
            for number, line in enumerate(fh, start=1):
                yield path, number, line


def verify(path: Path, expect: str | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """(problems, last good record): an empty list means the whole chain holds."""
    files = audit_files(path)
    if not files:
        return [f"{path}: no audit files"], None
    prev, seq, last, seen = GENESIS, 0, None, set()
    for file, number, raw in _lines(files):
        where = f"{file}:{number}"
        line = raw.rstrip("\n")
        try:
            record = json.loads(line)
        except ValueError:
            return [f"{where}: not a JSON record (cut short or edited)"], last
        if not isinstance(record, dict) or canonical(record) != line:
            return [f"{where}: not in the canonical form it was written in (edited)"], last
        if record.get("hash") != chain_hash(record):
            return [f"{where}: its hash does not match its content (edited)"], last
        if record.get("prev") != prev or record.get("seq") != seq + 1:
            why = "the chain starts here, not at the genesis" if seq == 0 else f"record {seq + 1} expected"
            return [
                f"{where}: does not follow the line before it ({why}: inserted, reordered or deleted)"
            ], last
        prev, seq, last = record["hash"], seq + 1, record
        seen.add(record["hash"])
    problems = []
    head_file = files[-1].with_name(files[-1].name + ".head")
    if head_file.is_file():
        head = json.loads(head_file.read_text() or "{}")
        if int(head.get("seq", 0)) > seq:
            problems.append(
                f"{files[-1]}: ends at record {seq} but record {head['seq']} was written (deleted)"
            )
        elif head.get("hash") not in seen:
            problems.append(f"{head_file}: names a record the chain does not hold (edited)")
    if expect and expect not in seen:
        problems.append(f"{path}: the expected hash {expect} is not in the chain (rewritten or cut)")
    return problems, last


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="askdb audit", description="check an askdb audit trail")
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="recompute the hash chain; exit 1 naming the first bad line")
    v.add_argument("path", type=Path, help="the audit log file, or its directory (rotated files too)")
    v.add_argument("--expect", help="a hash recorded elsewhere earlier: it must be in the chain")
    args = ap.parse_args(argv)
    problems, last = verify(args.path, args.expect)
    for problem in problems:
        print(f"BAD {problem}", file=sys.stderr)
    if last is not None:
        print(f"{'valid' if not problems else 'valid up to'} record {last['seq']}: {last['hash']}")
    return 1 if problems or last is None else 0
