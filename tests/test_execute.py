"""Execute on the real SQLite file and a real PostgreSQL: read-only, row cap, time limit that cancels."""

from __future__ import annotations

import time
from datetime import date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, exc
from sqlalchemy.exc import DBAPIError

from pipeline import databases
from pipeline.execute import QueryResult, QueryTimeout, SQLError, execute, json_safe
from pipeline.guard import guard
from pipeline.schema import describe
from tests.pg import chinook_db, content_checksum, db_checksum  # noqa: F401  (chinook_db: the `db` fixture)

TIMEOUT_S = 1.0
SLOW = 'SELECT count(*) FROM "Track" a, "Track" b, "Track" c'


def run(db: databases.Database, sql: str, max_rows: int = 100, timeout_s: float = TIMEOUT_S) -> QueryResult:
    tables = [t.name for t in describe(db).tables]  # what the pipeline gives the guard
    return execute(db, guard(sql, db.dialect, max_rows, tables), max_rows, timeout_s)


def test_rows_and_columns(db):
    out = run(db, 'SELECT "ArtistId", "Name" FROM "Artist" WHERE "ArtistId" <= 3 ORDER BY "ArtistId"')
    assert out.columns == ["ArtistId", "Name"]
    assert out.rows == [[1, "AC/DC"], [2, "Accept"], [3, "Aerosmith"]]
    assert out.truncated is False and out.row_count == 3


def test_values_are_json_safe(db):
    out = run(db, 'SELECT "Total", "InvoiceDate" FROM "Invoice" WHERE "InvoiceId" = 1')
    total, when = out.rows[0]
    assert total == pytest.approx(1.98) and isinstance(total, float)
    assert isinstance(when, str) and when.startswith("2007-01-01")


def test_aggregate_matches_across_dialects(db):
    out = run(db, 'SELECT count(*), round(sum("Total"), 2) FROM "Invoice"')
    assert out.rows[0][0] == 412
    assert out.rows[0][1] == pytest.approx(2328.60)


@pytest.mark.parametrize(
    ("sql", "max_rows", "count", "truncated"),
    [
        ('SELECT "TrackId" FROM "Track"', 10, 10, True),
        ('SELECT "TrackId" FROM "Track" LIMIT 5', 10, 5, False),
        ('SELECT "TrackId" FROM "Track" LIMIT 10', 10, 10, False),
        ('SELECT "TrackId" FROM "Track" LIMIT 11', 10, 10, True),
        ('SELECT "GenreId" FROM "Genre"', 25, 25, False),
        ('SELECT "GenreId" FROM "Genre"', 24, 24, True),
    ],
)
def test_row_cap_and_truncated(db, sql: str, max_rows: int, count: int, truncated: bool):
    out = run(db, sql, max_rows=max_rows)
    assert (out.row_count, out.truncated) == (count, truncated)


def test_row_cap_without_the_guard_limit(db):
    """execute caps on its own too (fetches max_rows + 1), even for SQL without a LIMIT."""
    out = execute(db, 'SELECT "TrackId" FROM "Track"', max_rows=7, timeout_s=TIMEOUT_S)
    assert (out.row_count, out.truncated) == (7, True)


def test_long_query_is_cancelled_inside_the_limit_and_the_connection_recovers(db):
    start = time.monotonic()
    with pytest.raises(QueryTimeout, match="time limit"):
        run(db, SLOW, timeout_s=TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 1.5
    assert run(db, 'SELECT count(*) FROM "Genre"').rows == [[25]]  # pool and connection still usable


def test_database_errors_are_sql_errors_with_the_database_message(db):
    with pytest.raises(SQLError) as info:
        run(db, 'SELECT NoSuchColumn FROM "Artist"')  # unquoted: SQLite reads "x" as a string literal
    assert "nosuchcolumn" in str(info.value).lower()
    assert "Traceback" not in str(info.value) and "[SQL:" not in str(info.value)


def test_a_write_through_the_engine_itself_fails(db):
    """Read-only is a property of the connection, not only of the guard."""
    before = db_checksum(db)
    writes = ['DELETE FROM "Artist"', 'UPDATE "Genre" SET "Name" = \'x\'', 'CREATE TABLE "Evil" (x INTEGER)']
    for sql in writes:
        with db.engine.connect() as conn, pytest.raises(exc.DBAPIError) as info:
            conn.exec_driver_sql(sql)
            conn.commit()
        message = str(info.value.orig).lower()
        assert "readonly" in message or "read-only" in message, message
    assert db_checksum(db) == before


def test_unguarded_writes_through_execute_fail_too(db):
    before = db_checksum(db)
    for sql in [
        'DELETE FROM "Track"',
        'DROP TABLE "PlaylistTrack"',
        "INSERT INTO \"Genre\" VALUES (99, 'x')",
    ]:
        with pytest.raises(SQLError):
            execute(db, sql, max_rows=10, timeout_s=TIMEOUT_S)
    assert db_checksum(db) == before


def test_postgres_session_cannot_be_switched_to_read_write(postgres):
    """Even unguarded SQL cannot lift read-only: the transaction is READ ONLY before the query runs,
    and a session-level change is rolled back with it."""
    database = databases.open_database("pg_rw_attempt", postgres.url)
    try:
        with pytest.raises(SQLError, match="read-write mode must be set before any query"):
            execute(database, "SELECT set_config('transaction_read_only', 'off', true)", 10, TIMEOUT_S)
        execute(database, "SELECT set_config('default_transaction_read_only', 'off', false)", 10, TIMEOUT_S)
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW default_transaction_read_only").scalar_one() == "on"
            with pytest.raises(exc.DBAPIError, match="read-only transaction"):
                conn.exec_driver_sql('DELETE FROM "Artist"')
    finally:
        database.engine.dispose()


def test_connection_errors_do_not_leak_the_password(postgres):
    wrong = "Wr0ng-" + postgres.password
    database = databases.open_database("pg_bad", postgres.url_for("askdb", wrong))
    # no statement ran, so this is the database being unavailable (a 503 in /ask), not an SQLError
    with pytest.raises(DBAPIError) as info:
        execute(database, "SELECT 1", 10, TIMEOUT_S)
    message = database.error_message(info.value)
    assert "password authentication failed" in message
    assert wrong not in message and postgres.password not in message
    assert wrong not in repr(database) and "127.0.0.1" not in repr(database)


def test_reader_role_sees_the_same_data(postgres):
    reader = databases.open_database("pg_reader", postgres.reader_url)
    owner = create_engine(postgres.url)
    try:
        assert run(reader, 'SELECT count(*) FROM "PlaylistTrack"').rows == [[8715]]
        assert content_checksum(owner) == content_checksum(reader.engine)
    finally:
        reader.engine.dispose()
        owner.dispose()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.98"), 1.98),
        (datetime(2009, 1, 2, 3, 4, 5), "2009-01-02T03:04:05"),
        (date(2009, 1, 2), "2009-01-02"),
        (b"\x00\xff", "00ff"),
        (float("nan"), "nan"),
        (None, None),
        ([Decimal("2")], [2.0]),
    ],
)
def test_json_safe(value, expected):
    assert json_safe(value) == expected
