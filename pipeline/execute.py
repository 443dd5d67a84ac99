"""Execute step: run guarded SQL on a read-only connection with a time limit and a row cap.

SQLite: the file is opened `mode=ro` (databases.py) and a progress handler aborts the statement once
the deadline passes, so a runaway join stops inside the limit. PostgreSQL: each query runs in a
`READ ONLY` transaction with `statement_timeout`, the server cancels it; the transaction always rolls
back. At most max_rows + 1 rows are fetched: the extra one only sets `truncated`.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any

from langchain_core.runnables import RunnableLambda
from sqlalchemy import Connection, exc

from pipeline.databases import Database

# How many SQLite virtual-machine steps run between two deadline checks (cheap, ~1 ms apart).
PROGRESS_STEPS = 10_000
PG_TIMEOUT_STATE = "57014"  # query_canceled


class QueryTimeout(Exception):
    """The query ran past its time limit and was cancelled."""


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
            result = _fetch(conn, sql, max_rows)
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
            return _fetch(conn, sql, max_rows)
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
            # database being down (a 503 upstream in pipeline/ask.py), not the query being wrong.
            raise
        raise SQLError(db.error_message(err)) from None


def as_runnable(max_rows: int = 100, timeout_s: float = 10.0) -> RunnableLambda:
    """Runnable: {"db": Database, "sql", "max_rows"?, "timeout_s"?} -> QueryResult."""

    def run(inputs: dict) -> QueryResult:
        return execute(
            inputs["db"],
            inputs["sql"],
            int(inputs.get("max_rows", max_rows)),
            float(inputs.get("timeout_s", timeout_s)),
        )

    return RunnableLambda(run, name="execute")
