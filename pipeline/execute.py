"""Execute step: run guarded SQL on a read-only connection with a time limit and a row cap.

SQLite: the file is opened `mode=ro` (databases.py) and a progress handler aborts the statement once
the deadline passes, so a runaway join stops inside the limit. PostgreSQL: each query runs in a
`READ ONLY` transaction with `statement_timeout`, the server cancels it; the transaction always rolls
back. At most max_rows + 1 rows are fetched: the extra one only sets `truncated`.

Cancellation: run `execute` (or anything that calls it) through `in_thread`; if the awaiting task
is cancelled (the client left, runners/disconnect.py), the running statement is stopped at once,
not at its time limit: SQLite through `interrupt()`, PostgreSQL through psycopg's cancel request
(`cancel_safe`), after which the backend leaves `pg_stat_activity`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Connection, exc

from pipeline.databases import Database

# How many SQLite virtual-machine steps run between two deadline checks (cheap, ~1 ms apart).
PROGRESS_STEPS = 10_000
PG_TIMEOUT_STATE = "57014"  # query_canceled
T = TypeVar("T")
log = logging.getLogger("bentoml.askdb.execute")  # under bentoml: its log handlers apply


class QueryTimeout(Exception):
    """The query ran past its time limit and was cancelled."""


class QueryCancelled(Exception):
    """The caller left; its query was stopped."""


@dataclass
class CancelScope:
    """The statement running for one caller, and how to stop it from another thread."""

    cancelled: bool = False
    _stop: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, stop: Callable[[], None]) -> None:
        with self._lock:
            if self.cancelled:
                raise QueryCancelled("the caller left before the query started")
            self._stop = stop

    def detach(self) -> None:
        with self._lock:
            self._stop = None

    def cancel(self) -> None:
        with self._lock:
            self.cancelled, stop = True, self._stop
        if stop is not None:  # PostgreSQL's cancel opens a connection: not on the event loop
            log.info("stopping a running query: its caller left")
            threading.Thread(target=stop, name="askdb-sql-cancel", daemon=True).start()


_scope: ContextVar[CancelScope | None] = ContextVar("askdb_sql_scope", default=None)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread(fn, *args)`, stopping the SQL it runs if the awaiting task is cancelled."""
    scope = CancelScope()

    def run() -> T:
        _scope.set(scope)  # in the thread's own copy of the context
        return fn(*args)

    try:
        return await asyncio.to_thread(run)
    except asyncio.CancelledError:
        scope.cancel()
        raise


@contextlib.contextmanager
def _stoppable(stop: Callable[[], None]) -> Iterator[CancelScope | None]:
    scope = _scope.get()
    if scope is None:
        yield None
        return
    scope.attach(stop)
    try:
        yield scope
    finally:
        scope.detach()


class SQLError(Exception):
    """The database rejected the query; the message is the database's, without secrets."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list]
    truncated: bool

    @property
    def row_count(self) -> int:
        return len(self.rows)


def json_safe(value: Any) -> Any:
    """A value JSON can carry: Decimal -> float, dates -> ISO text, bytes -> hex."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def _fetch(conn: Connection, sql: str, max_rows: int) -> QueryResult:
    # Driver-level SQL with no parameter set: ':name' and '%' in literals stay literal text. Streaming
    # (a server-side cursor on PostgreSQL) moves only the rows fetched, not the whole result.
    options = {"no_parameters": True, "stream_results": True, "max_row_buffer": max_rows + 1}
    result = conn.exec_driver_sql(sql, execution_options=options)
    if not result.returns_rows:
        return QueryResult(columns=[], rows=[], truncated=False)
    columns = list(result.keys())
    rows = result.fetchmany(max_rows + 1)
    result.close()
    out = [[json_safe(v) for v in row] for row in rows[:max_rows]]
    return QueryResult(columns=columns, rows=out, truncated=len(rows) > max_rows)


def _run_sqlite(db: Database, sql: str, max_rows: int, timeout_s: float) -> QueryResult:
    deadline = time.monotonic() + timeout_s
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        # A non-zero return aborts the running statement with "interrupted".
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
        try:
            with _stoppable(raw.interrupt) as scope:
                try:
                    result = _fetch(conn, sql, max_rows)
                except exc.OperationalError:
                    if scope is not None and scope.cancelled:
                        raise QueryCancelled("query stopped: its caller left") from None
                    raise
            # the handler runs every PROGRESS_STEPS instructions: a short query can end past the
            # deadline without being interrupted, and the limit is a promise, so it still counts
            if time.monotonic() > deadline:
                raise QueryTimeout(f"query cancelled after the {timeout_s:g} s time limit")
            return result
        except exc.OperationalError as err:
            if "interrupted" in str(err.orig):
                raise QueryTimeout(f"query cancelled after the {timeout_s:g} s time limit") from None
            raise
        finally:
            raw.set_progress_handler(None, 0)
            conn.rollback()


def _run_postgres(db: Database, sql: str, max_rows: int, timeout_s: float) -> QueryResult:
    ms = max(1, int(timeout_s * 1000))
    with db.engine.connect() as conn:
        try:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            raw = conn.connection.driver_connection
            with _stoppable(lambda: raw.cancel_safe(timeout=2)) as scope:
                try:
                    return _fetch(conn, sql, max_rows)
                except exc.DBAPIError:
                    if scope is not None and scope.cancelled:
                        raise QueryCancelled("query stopped: its caller left") from None
                    raise
        except exc.DBAPIError as err:
            if getattr(err.orig, "sqlstate", None) == PG_TIMEOUT_STATE:
                raise QueryTimeout(f"query cancelled after the {timeout_s:g} s time limit") from None
            raise
        finally:
            conn.rollback()  # nothing is ever committed


def execute(db: Database, sql: str, max_rows: int, timeout_s: float) -> QueryResult:
    """Run one (guarded) query; QueryTimeout past `timeout_s`, SQLError when the database refuses it."""
    if max_rows < 1 or timeout_s <= 0:
        raise ValueError("max_rows must be >= 1 and timeout_s > 0")
    run = _run_sqlite if db.dialect == "sqlite" else _run_postgres
    try:
        return run(db, sql, max_rows, timeout_s)
    except exc.DBAPIError as err:
        if err.statement is None or err.connection_invalidated:
            # No statement ran: the server is unreachable or the connection dropped. That is the
            # database being down (a 503 upstream in api/ask.py), not the query being wrong.
            raise
        raise SQLError(db.error_message(err)) from None
