"""Value grounding (pipeline/values.py) on real Chinook, in SQLite and in PostgreSQL."""

from __future__ import annotations

import pytest
import sqlglot

from pipeline import databases, schema
from pipeline.execute import execute
from pipeline.values import add_missing_values, fix_value_columns, named_values
from tests.pg import db_checksum


def _rows(db: databases.Database, sql: str) -> list:
    return sorted(map(repr, execute(db, sql, 100_000, 10).rows))


@pytest.fixture(scope="module")
def sqlite_db() -> databases.Database:
    return databases.get("chinook")


@pytest.fixture(scope="module")
def pg_db(postgres) -> databases.Database:
    return databases.open_database("pg_values", postgres.reader_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, sqlite_db, pg_db) -> databases.Database:
    return sqlite_db if request.param == "sqlite" else pg_db


def _q(db: databases.Database, sql: str) -> str:
    """Chinook's names are PascalCase: in PostgreSQL every identifier is quoted."""
    if db.dialect == "sqlite":
        return sql
    return sqlglot.transpile(sql, read="sqlite", write="postgres", identify=True)[0]


@pytest.mark.parametrize(
    ("wrong", "meant"),
    [
        (
            "SELECT SUM(Total) FROM Invoice WHERE BillingCity = 'Germany' ",
            "SELECT SUM(Total) FROM Invoice WHERE BillingCountry = 'Germany' ",
        ),
        (
            "SELECT c.FirstName FROM Customer c WHERE c.City = 'Brazil' ",
            "SELECT c.FirstName FROM Customer c WHERE c.Country = 'Brazil' ",
        ),
    ],
)
def test_value_moves_to_the_column_that_holds_it(db: databases.Database, wrong: str, meant: str) -> None:
    wrong, meant = _q(db, wrong), _q(db, meant)
    fixed = fix_value_columns(wrong, db, schema.describe(db), 5)
    assert fixed != wrong
    assert _rows(db, fixed) == _rows(db, meant) != _rows(db, wrong)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM Customer WHERE Country = 'Brazil' ",  # the value is where the model put it
        "SELECT * FROM Customer WHERE Country = 'Atlantis' ",  # in no column: nothing to re-point to
        "SELECT * FROM Customer WHERE CustomerId = 5 ",  # numbers are left to the model
    ],
)
def test_queries_that_need_nothing_are_left_alone(db: databases.Database, sql: str) -> None:
    sql = _q(db, sql)
    assert fix_value_columns(sql, db, schema.describe(db), 5) == sql


def test_hostile_literals_are_only_ever_values(db: databases.Database) -> None:
    """The lookups quote the model's literal as a value: a statement hidden in it never runs."""
    before = db_checksum(db)
    for literal in ("x'; DROP TABLE Track; --", "Germany' OR '1'='1", "'); ATTACH 'x' AS y; --"):
        sql = _q(db, "SELECT COUNT(*) FROM Invoice WHERE BillingCity = 'placeholder'")
        sql = sql.replace("'placeholder'", "'" + literal.replace("'", "''") + "'")
        assert fix_value_columns(sql, db, schema.describe(db), 5) == sql
    assert db_checksum(db) == before


@pytest.mark.parametrize(
    ("question", "wrong", "meant"),
    [
        (
            "What is the average invoice total for the USA?",
            "SELECT AVG(Total) FROM Invoice",
            "SELECT AVG(Total) FROM Invoice WHERE BillingCountry = 'USA'",
        ),
        (  # an album and an artist are both called Iron Maiden: the question says which
            "How many albums does the artist 'Iron Maiden' have?",
            "SELECT COUNT(*) FROM Album JOIN Artist ON Artist.ArtistId = Album.ArtistId",
            "SELECT COUNT(*) FROM Album JOIN Artist ON Artist.ArtistId = Album.ArtistId "
            "WHERE Artist.Name = 'Iron Maiden'",
        ),
    ],
)
def test_a_dropped_filter_is_put_back(db: databases.Database, question: str, wrong: str, meant: str) -> None:
    wrong, meant = _q(db, wrong), _q(db, meant)
    fixed = add_missing_values(wrong, question, db, schema.describe(db), 5)
    assert _rows(db, fixed) == _rows(db, meant) != _rows(db, wrong)


@pytest.mark.parametrize(
    ("question", "sql"),
    [
        ("Which customers live in Brazil?", "SELECT FirstName FROM Customer WHERE Country = 'Brazil'"),
        ("How many customers does Steve Johnson support?", "SELECT COUNT(*) FROM Customer"),  # no column
        (
            "Which albums have 'Greatest' in the title?",
            "SELECT Title FROM Album WHERE Title LIKE '%Greatest%'",
        ),
    ],
)
def test_filters_there_or_unknown_are_not_added(db: databases.Database, question: str, sql: str) -> None:
    sql = _q(db, sql)
    assert add_missing_values(sql, question, db, schema.describe(db), 5) == sql


def test_named_values() -> None:
    assert named_values("How many albums does the artist 'Iron Maiden' have?") == ["Iron Maiden"]
    assert named_values("Which customers live in the city of Prague or in the USA?") == ["Prague", "USA"]
    assert named_values("How many tracks are there?") == []
