"""Verified examples: feedback proposes question -> SQL pairs, a person approves them, and only
approved pairs ever join a database's example bank.

One folder per database under `ASKDB_EXAMPLE_STORE` (default `<data dir>/examples`):
- `proposals.jsonl`  every proposal, appended (id, ts, key, question, sql, comment, request_id);
- `decisions.jsonl`  every approval or rejection, appended (id, decision, by, ts);
- `approved.yaml`    the approved pairs, rewritten whole (temp file + rename) on each approval.

The bank (pipeline/chain.py) reads `approved.yaml` only, and reloads it when its (inode, mtime,
size) changes, so an approval made by any process (a worker, `askdb examples review`) reaches every
worker's next question without a restart. Writes hold an exclusive `flock` on the folder's `.lock`.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

import settings
from pipeline import databases
from pipeline.examples import Example
from pipeline.guard import guard
from pipeline.schema import describe

MAX_PENDING = 10_000  # per database: past this, proposals are refused until someone reviews them
MAX_SQL_CHARS = 8000


class ProposalError(ValueError):
    """A proposal that cannot be made or decided; `status` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Proposal:
    id: str
    ts: str
    db: str
    question: str
    sql: str
    key: str | None = None
    comment: str | None = None
    request_id: str | None = None
    status: str = "pending"  # pending | approved | rejected

    def to_api(self) -> dict:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line a crash cut short
    return out


class ExampleStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> ExampleStore:
        return cls(settings.load().example_store_path())

    def folder(self, db: str) -> Path:
        if not databases.NAME.match(db):  # the name becomes a path: no separators, no '..'
            raise ProposalError(f"database name {db[:64]!r} is not valid")
        return self.root / db

    def _guard(self, db: str, sql: str, dialect: str) -> None:
        """The SQL guard over the database's own tables (as /schema shows them)."""
        self.folder(db)  # the name first: it also becomes a path
        try:
            tables = [t.name for t in describe(databases.get(db)).tables]
        except databases.UnknownDatabase as err:
            raise ProposalError(str(err), 404) from None
        guard(sql, dialect, 1, tables)

    @contextmanager
    def _locked(self, db: str) -> Iterator[Path]:
        folder = self.folder(db)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock, open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield folder

    # --- proposing ---
    def propose(
        self,
        db: str,
        question: str,
        sql: str,
        dialect: str,
        *,
        key: str | None = None,
        comment: str | None = None,
        request_id: str | None = None,
    ) -> Proposal:
        """Store a proposal once its SQL passes the guard for the database; never shown to a model."""
        if not question.strip():
            raise ProposalError("field 'question' is needed with 'sql': the question the SQL answers")
        if len(sql) > MAX_SQL_CHARS:
            raise ProposalError(f"field 'sql' is longer than {MAX_SQL_CHARS} characters")
        try:
            self._guard(db, sql, dialect)
        except ValueError as err:  # ParseError and Refused are ValueErrors
            raise ProposalError(f"field 'sql' does not pass the SQL guard for '{db}': {err}") from None
        with self._locked(db) as folder:
            if len(self._pending(folder)) >= MAX_PENDING:
                raise ProposalError(f"{MAX_PENDING} proposals for '{db}' await review; try later", 429)
            proposal = Proposal(
                id=uuid.uuid4().hex[:12],
                ts=_now(),
                db=db,
                question=question.strip(),
                sql=sql.strip(),
                key=key,
                comment=comment,
                request_id=request_id,
            )
            record = {k: v for k, v in proposal.to_api().items() if k != "status"}
            with (folder / "proposals.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        return proposal

    # --- reviewing ---
    def _decisions(self, folder: Path) -> dict[str, str]:
        return {d["id"]: d["decision"] for d in _read_jsonl(folder / "decisions.jsonl")}

    def _all(self, folder: Path) -> list[Proposal]:
        decided = self._decisions(folder)
        fields = set(Proposal.__dataclass_fields__) - {"status"}
        return [
            Proposal(**{k: v for k, v in p.items() if k in fields}, status=decided.get(p["id"], "pending"))
            for p in _read_jsonl(folder / "proposals.jsonl")
        ]

    def _pending(self, folder: Path) -> list[Proposal]:
        return [p for p in self._all(folder) if p.status == "pending"]

    def proposals(self, db: str, status: str | None = "pending") -> list[Proposal]:
        folder = self.folder(db)
        return [p for p in self._all(folder) if status is None or p.status == status]

    def decide(self, db: str, proposal_id: str, approve: bool, by: str, dialect: str) -> Proposal:
        """Approve (the pair joins the bank at once) or reject a pending proposal."""
        with self._locked(db) as folder:
            found = next((p for p in self._all(folder) if p.id == proposal_id), None)
            if found is None:
                raise ProposalError(f"no proposal {proposal_id[:64]!r} for database '{db}'", 404)
            if found.status != "pending":
                raise ProposalError(f"proposal {proposal_id} is already {found.status}", 409)
            if approve:
                try:  # the guard may be stricter now than when it was proposed
                    self._guard(db, found.sql, dialect)
                except ValueError as err:
                    why = f"proposal {proposal_id} no longer passes the SQL guard: {err}"
                    raise ProposalError(why, 422) from None
                bank = self._approved_items(folder)
                bank.append({"id": found.id, "question": found.question, "sql": found.sql})
                tmp = folder / "approved.yaml.tmp"
                tmp.write_text(yaml.safe_dump(bank, allow_unicode=True, sort_keys=False), encoding="utf-8")
                tmp.replace(folder / "approved.yaml")  # readers see the old file or the new one
            decision = "approved" if approve else "rejected"
            entry = {"id": found.id, "decision": decision, "by": by, "ts": _now()}
            with (folder / "decisions.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        return Proposal(**{**found.to_api(), "status": decision})

    # --- what the bank reads ---
    @staticmethod
    def _approved_items(folder: Path) -> list[dict]:
        path = folder / "approved.yaml"
        return list(yaml.safe_load(path.read_text(encoding="utf-8")) or []) if path.is_file() else []

    def approved(self, db: str) -> list[Example]:
        items = self._approved_items(self.folder(db))
        return [Example(str(i["question"]), str(i["sql"]), verified=True) for i in items]

    def stamp(self, db: str) -> tuple[int, int, int] | None:
        """Changes whenever approved.yaml is replaced (rename: new inode) or rewritten."""
        try:
            st = (self.folder(db) / "approved.yaml").stat()
        except (FileNotFoundError, ProposalError):
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size


_store: ExampleStore | None = None


def store() -> ExampleStore:
    global _store
    if _store is None:
        _store = ExampleStore.from_env()
    return _store
