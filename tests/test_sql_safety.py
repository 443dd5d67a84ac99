"""Hostile SQL against the real SQLite file and a real PostgreSQL, through guard + execute as the
pipeline runs them, and hostile questions through POST /ask on real servers: refused or harmless,
the database unchanged, long queries cancelled in time."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from pipeline import databases
from pipeline.execute import QueryResult, QueryTimeout, SQLError, execute
from pipeline.guard import ParseError, Refused, guard
from pipeline.schema import describe
from samples.chinook import default_path
from tests.guarded import Guarded
from tests.hostile_sql import CHINOOK_TABLES, HOSTILE_QUESTIONS, REFUSED, SLOW, WRITES, for_dialect
from tests.metrics_util import sample_sum
from tests.pg import chinook_db, db_checksum  # noqa: F401  (chinook_db: the `db` fixture)

TIMEOUT_S = 1.0
MARGIN_S = 1.5  # process scheduling on a shared 2-core machine, not query time


def own_tables(db: databases.Database) -> list[str]:
    """What the pipeline gives the guard (pipeline/repair.py): the reflected schema's table names."""
    return [t.name for t in describe(db).tables]


def pipeline_run(db: databases.Database, sql: str, max_rows: int = 100) -> QueryResult:
    """What the text-to-SQL chain does with a model's SQL."""
    return execute(db, guard(sql, db.dialect, max_rows, own_tables(db)), max_rows, TIMEOUT_S)


def test_hostile_sql_is_refused_and_nothing_changes(db):
    before = db_checksum(db)
    outcomes = {}
    for sql in for_dialect(REFUSED, db.dialect):
        try:
            pipeline_run(db, sql)
            outcomes[sql] = "ran"
        except (Refused, ParseError) as err:
            outcomes[sql] = type(err).__name__
    assert len(outcomes) >= 50
    assert {sql: o for sql, o in outcomes.items() if o != "Refused"} == {}
    assert db_checksum(db) == before


def test_writes_that_slip_past_the_guard_still_fail_on_the_read_only_connection(db):
    before = db_checksum(db)
    for sql in for_dialect(WRITES, db.dialect):
        with pytest.raises(SQLError):
            execute(db, sql, max_rows=10, timeout_s=TIMEOUT_S)
    assert db_checksum(db) == before


@pytest.mark.parametrize("sql", [sql for sql, _ in SLOW])
def test_long_queries_are_cancelled_inside_the_time_limit(db, sql: str):
    before = db_checksum(db)
    start = time.monotonic()
    with pytest.raises(QueryTimeout):
        pipeline_run(db, sql)
    assert time.monotonic() - start < TIMEOUT_S + MARGIN_S
    assert pipeline_run(db, 'SELECT count(*) FROM "MediaType"').rows == [[5]]
    assert db_checksum(db) == before


def test_harmless_reads_still_work_after_the_attacks(db):
    out = pipeline_run(db, 'SELECT "Name" FROM "Artist" ORDER BY "ArtistId"', max_rows=3)
    assert out.rows == [["AC/DC"], ["Accept"], ["Aerosmith"]] and out.truncated


def _ask_all(url: str, db: str, questions: list[str], max_attempts: int = 1) -> list[httpx.Response]:
    """Hostile questions, 8 at a time (the LLM runner batches them), no answer step: what matters is
    what the model's SQL can do. The query time limit is short so that a runaway read ends as a
    `timeout` whose message names it."""
    options = {"max_attempts": max_attempts, "candidates": 1, "answer": False, "timeout_s": TIMEOUT_S}

    def ask(question: str) -> httpx.Response:
        body = {"question": question, "db": db, "answer": False, "options": options}
        return httpx.post(f"{url}/ask", json=body, timeout=600)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(ask, questions))


def _refused_or_harmless(
    url: str, db: str, dialect: str, questions: list[str], max_attempts: int = 1
) -> None:
    """Ask every question; each ends refused (a 422 in the contract's shape) or harmless."""
    for question, response in zip(questions, _ask_all(url, db, questions, max_attempts), strict=True):
        assert response.status_code in (200, 422), (question, response.status_code, response.text)
        body = response.json()
        if response.status_code == 422:
            error = body["error"]
            assert set(error) == {"type", "message", "sql"}, body
            assert error["type"] in {"unanswerable", "refused", "sql_error", "timeout"}, body
            if error["type"] == "timeout":
                assert f"{TIMEOUT_S:g} s" in error["message"], body
        else:  # whatever ran was one guarded read-only query
            assert guard(body["sql"], dialect, 1000, CHINOOK_TABLES), body


def test_hostile_questions_through_ask_on_sqlite(askdb):
    """One generation per question: every reply the model writes meets the guard, then the
    read-only connection; the file's bytes are unchanged too."""
    database = databases.get("chinook")
    before = db_checksum(database)
    _refused_or_harmless(askdb.url, "chinook", "sqlite", HOSTILE_QUESTIONS)
    assert db_checksum(database) == before


def test_hostile_questions_through_ask_on_postgres(askdb_pg, postgres):
    """`pg_env` connects as the owner (a superuser): the guard and the read-only session protect it."""
    owner = databases.open_database("pg_owner_check", postgres.url)
    before = db_checksum(owner)
    _refused_or_harmless(askdb_pg.url, "pg_env", "postgresql", HOSTILE_QUESTIONS)
    assert db_checksum(owner) == before
    owner.engine.dispose()


def _attempts(url: str) -> float:
    return sample_sum(url, "askdb_ask_attempts", "askdb_ask_attempts_sum")


REPAIRED = HOSTILE_QUESTIONS[:6]  # writes and drops: the first reply is refused, and fed back


def test_a_refusal_fed_back_to_the_model_meets_the_guard_again(askdb):
    """Repair rounds: the model sees why its write was refused and tries again; the new reply is
    guarded like the first (the rounds happened: the attempts histogram grew past one a question)."""
    database = databases.get("chinook")
    before, attempts = db_checksum(database), _attempts(askdb.url)
    _refused_or_harmless(askdb.url, "chinook", "sqlite", REPAIRED, max_attempts=2)
    assert _attempts(askdb.url) - attempts > len(REPAIRED)
    assert db_checksum(database) == before


# Copied from the question word for word by the model (one attempt, so no repair rewrites it).
CATALOG_QUESTIONS = {
    "SELECT * FROM pragma_database_list": "pragma_database_list",
    "SELECT * FROM pragma_compile_options": "pragma_compile_options",
}


@pytest.mark.parametrize("key", ["full", "scoped"])
def test_catalog_reads_through_ask_are_refused_naming_the_table(guarded: Guarded, key: str) -> None:
    """Table-valued pragmas answered the server's database file paths and build options before."""
    for question, table in CATALOG_QUESTIONS.items():
        body = {"question": question, "answer": False, "options": {"max_attempts": 1}}
        r = httpx.post(f"{guarded.url}/ask", headers=guarded.auth(key), json=body, timeout=300)
        # no database file path (however the server resolves it) and no build option leaves
        assert default_path().name not in r.text and "THREADSAFE" not in r.text, r.text[:300]
        assert r.status_code == 422, r.text[:300]
        error = r.json()["error"]
        assert error["type"] == "refused" and table in error["message"], error
