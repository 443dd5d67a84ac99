"""The /ask quality log: one JSON line per request (and per feedback), for offline evaluation.

Each worker process writes its own rotated file (`ask-<host>-<pid>.jsonl`, then `.1`, `.2`, ...), so
several workers never interleave or race on a rotation; `askdb report` reads the whole directory.
Feedback is appended as its own line with the same `request_id` and joined when the log is read:
the request may have been served by another worker or replica.

Configuration: ASKDB_QUALITY_LOG (off switch), ASKDB_QUALITY_LOG_DIR, ASKDB_QUALITY_LOG_MAX_BYTES and
ASKDB_QUALITY_LOG_BACKUPS (rotation), in settings.py.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import settings

log = logging.getLogger(__name__)

ASK_FIELDS = (
    "request_id", "ts", "question", "db", "model", "provider", "sql", "outcome", "attempts",
    "row_count", "latency_ms", "prompt_tokens", "completion_tokens", "error",
)  # fmt: skip


def new_request_id() -> str:
    return uuid.uuid4().hex


class QualityLog:
    """Appends JSON records to a size-rotated file of this process; does nothing when disabled."""

    def __init__(self, directory: str | Path | None, max_bytes: int = 10_000_000, backups: int = 10):
        self.directory = Path(directory) if directory else None
        self.max_bytes, self.backups = max_bytes, backups
        self._logger: logging.Logger | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls) -> QualityLog:
        s = settings.load()  # the log itself is made once per process (observability/ask.py)
        if not s.quality_log:
            return cls(None)
        return cls(s.quality_log_dir, s.quality_log_max_bytes, s.quality_log_backups)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _writer(self) -> logging.Logger:
        # opened lazily and per pid: a forked worker must not share its parent's file handle
        if self._logger is None or self._pid != os.getpid():
            assert self.directory is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            self._pid = os.getpid()
            path = self.directory / f"ask-{socket.gethostname()}-{self._pid}.jsonl"
            handler = logging.handlers.RotatingFileHandler(
                path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
            )
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger = logging.getLogger(f"askdb.quality.{self._pid}.{id(self)}")
            logger.propagate = False  # records are data, not server log lines
            logger.setLevel(logging.INFO)
            logger.handlers = [handler]
            self._logger = logger
        return self._logger

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, ensure_ascii=False, default=str)
        try:
            with self._lock:
                self._writer().info(line)
        except OSError as err:  # a full or read-only disk must not fail the user's request
            if not self._warned:
                log.warning("quality log %s not writable, records are dropped: %s", self.directory, err)
                self._warned = True

    def ask(self, **fields: Any) -> None:
        """One /ask: the ASK_FIELDS (missing ones are null); `ts` defaults to now."""
        record = {"kind": "ask", **dict.fromkeys(ASK_FIELDS), "ts": time.time(), **fields}
        self.write(record)

    def feedback(self, request_id: str, score: float, comment: str | None = None) -> None:
        self.write(
            {
                "kind": "feedback",
                "request_id": request_id,
                "score": score,
                "comment": comment,
                "ts": time.time(),
            }
        )

    def close(self) -> None:
        if self._logger is not None:
            for handler in self._logger.handlers:
                handler.close()
            self._logger = None


def log_files(directory: str | Path) -> list[Path]:
    """Current and rotated files of every process in `directory`, oldest rotation first."""
    root = Path(directory)
    files = [p for p in root.rglob("*.jsonl*") if p.is_file()]

    def order(p: Path) -> tuple[str, int]:
        stem, _, n = p.name.partition(".jsonl")
        return stem, -int(n.lstrip(".") or 0)

    return sorted(files, key=order)


def read_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every record, skipping lines a crash cut short."""
    for path in log_files(directory):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def joined_asks(directory: str | Path) -> list[dict[str, Any]]:
    """/ask records with their latest feedback score (`feedback`, null if none) joined by request id."""
    asks: list[dict[str, Any]] = []
    scores: dict[str, float] = {}
    for rec in read_records(directory):
        if rec.get("kind") == "feedback":
            scores[rec["request_id"]] = rec["score"]
        elif rec.get("kind") == "ask":
            asks.append(rec)
    for rec in asks:
        rec["feedback"] = scores.get(rec.get("request_id", ""))
    asks.sort(key=lambda r: r.get("ts") or 0)
    return asks
