"""Guard unit tests: SQL fed directly (no model), exact outcomes in both dialects."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlglot
import yaml

from pipeline import databases, schema
from pipeline.guard import ParseError, Refused, guard
from tests.hostile_sql import CHINOOK_TABLES, REFUSED, SLOW, WRITES

T = CHINOOK_TABLES  # what the pipeline passes: the database's reflected table names

DIALECTS = ["sqlite", "postgresql"]


def cases(entries):
    return [pytest.param(sql, d, id=f"{d}:{sql[:50]}") for sql, ds in entries for d in ds]


def test_at_least_fifty_hostile_inputs_per_dialect():
    for dialect in DIALECTS:
        assert sum(dialect in ds for _, ds in REFUSED) >= 50


@pytest.mark.parametrize(("sql", "dialect"), cases(REFUSED))
def test_hostile_sql_is_refused(sql: str, dialect: str):
    with pytest.raises(Refused) as info:
        guard(sql, dialect, max_rows=100, tables=T)
    assert info.value.sql == sql
    assert str(info.value)  # says why


@pytest.mark.parametrize(("sql", "dialect"), cases(SLOW))
def test_slow_queries_pass_the_guard_and_are_left_to_the_time_limit(sql: str, dialect: str):
    assert guard(sql, dialect, max_rows=10, tables=T).endswith("LIMIT 11")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ('SELECT "Name" FROM "Artist"', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        ('select "Name" from "Artist" limit 5', 'SELECT "Name" FROM "Artist" LIMIT 5'),
        ('SELECT "Name" FROM "Artist" LIMIT 5000', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        ('SELECT "Name" FROM "Artist" LIMIT 100', 'SELECT "Name" FROM "Artist" LIMIT 100'),
        ('SELECT "Name" FROM "Artist" LIMIT 10 OFFSET 20', 'SELECT "Name" FROM "Artist" LIMIT 10 OFFSET 20'),
        ('SELECT "Name" FROM "Artist";', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        ('SELECT "Name" FROM "Artist" -- all of them\n', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        ('SELECT /* hi */ "Name" FROM "Artist"', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        (
            'SELECT "Name" FROM "Genre" UNION SELECT "Name" FROM "MediaType"',
            'SELECT "Name" FROM "Genre" UNION SELECT "Name" FROM "MediaType" LIMIT 101',
        ),
        (
            'SELECT "Name" FROM "Genre" EXCEPT SELECT "Name" FROM "MediaType" LIMIT 3',
            'SELECT "Name" FROM "Genre" EXCEPT SELECT "Name" FROM "MediaType" LIMIT 3',
        ),
        (
            'WITH big AS (SELECT "AlbumId" FROM "Track" GROUP BY "AlbumId" HAVING count(*) > 20) '
            "SELECT count(*) FROM big",
            'WITH big AS (SELECT "AlbumId" FROM "Track" GROUP BY "AlbumId" HAVING COUNT(*) > 20) '
            "SELECT COUNT(*) FROM big LIMIT 101",
        ),
        ('(SELECT "Name" FROM "Artist")', 'SELECT "Name" FROM "Artist" LIMIT 101'),
        (
            "SELECT 'a;b', '-- not a comment', '/* nor this */'",
            "SELECT 'a;b', '-- not a comment', '/* nor this */' LIMIT 101",
        ),
    ],
)
def test_read_only_queries_are_accepted_with_a_bounded_limit(sql: str, expected: str, dialect: str):
    assert guard(sql, dialect, max_rows=100, tables=T) == expected


@pytest.mark.parametrize(
    ("sql", "dialect"),
    [
        (
            'SELECT e."FirstName", m."FirstName" FROM "Employee" e LEFT JOIN "Employee" m '
            'ON e."ReportsTo" = m."EmployeeId"',
            "sqlite",
        ),
        (
            'SELECT strftime(\'%Y\', "InvoiceDate") AS y, round(sum("Total"), 2) FROM "Invoice" GROUP BY y',
            "sqlite",
        ),
        (
            'SELECT julianday(\'now\') - julianday("HireDate"), ifnull("ReportsTo", 0) FROM "Employee"',
            "sqlite",
        ),
        (
            'SELECT date_trunc(\'month\', "InvoiceDate"), extract(year FROM "InvoiceDate"), '
            'to_char("InvoiceDate", \'YYYY\') FROM "Invoice"',
            "postgresql",
        ),
        ('SELECT "Name", rank() OVER (ORDER BY "Milliseconds" DESC) FROM "Track"', "postgresql"),
        ('SELECT "Name", row_number() OVER (PARTITION BY "AlbumId") FROM "Track"', "sqlite"),
        ('SELECT string_agg("Name", \', \') FROM "Genre"', "postgresql"),
        ('SELECT "BillingCountry", count(*) FROM "Invoice" GROUP BY 1 ORDER BY 2 DESC', "postgresql"),
        ('SELECT * FROM "Track" WHERE "AlbumId" IN (SELECT "AlbumId" FROM "Album" LIMIT 1000000)', "sqlite"),
        ("SELECT value FROM json_each('[1, 2]')", "sqlite"),  # an allow-listed table-valued function
    ],
)
def test_everyday_analytics_pass(sql: str, dialect: str):
    out = guard(sql, dialect, max_rows=100, tables=T)
    assert out.endswith("LIMIT 101")
    assert "1000000" in out or "1000000" not in sql  # inner limits are the query's business


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    ("limit", "expected"),
    [("LIMIT (SELECT 1000)", 11), ("LIMIT -1", 11), ("LIMIT 0", 0), ("LIMIT 7", 7)],
)
def test_non_literal_or_negative_limits_become_the_cap(limit: str, expected: int, dialect: str):
    assert guard(f'SELECT "Name" FROM "Artist" {limit}', dialect, max_rows=10, tables=T).endswith(
        f"LIMIT {expected}"
    )


@pytest.mark.parametrize("clause", ["FETCH FIRST 500 ROWS ONLY", "LIMIT ALL"])
def test_postgres_fetch_first_and_limit_all_are_clamped_too(clause: str):
    out = guard(f'SELECT "Name" FROM "Artist" {clause}', "postgresql", max_rows=10, tables=T)
    assert out == 'SELECT "Name" FROM "Artist" LIMIT 11'


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "sql", ["", "   ", ";", "-- only a comment", "SELECT * FROM", "SELECT FROM WHERE (", "SELECT (1"]
)
def test_unparsable_or_empty_sql_is_a_parse_error(sql: str, dialect: str):
    with pytest.raises(ParseError) as info:
        guard(sql, dialect, max_rows=10, tables=T)
    assert info.value.sql == sql


def test_messages_name_the_problem():
    with pytest.raises(Refused, match="exactly one statement"):
        guard("SELECT 1; SELECT 2", "sqlite", 10, T)
    with pytest.raises(Refused, match=r"pg_read_file\(\)"):
        guard("SELECT pg_read_file('x')", "postgresql", 10, T)
    with pytest.raises(Refused, match="only a SELECT"):
        guard('DELETE FROM "Artist"', "sqlite", 10, T)
    with pytest.raises(Refused, match=r"SELECT \.\.\. INTO"):
        guard('SELECT * INTO "Copy" FROM "Artist"', "postgresql", 10, T)
    with pytest.raises(Refused, match="locking clause"):
        guard('SELECT * FROM "Artist" FOR UPDATE', "postgresql", 10, T)
    with pytest.raises(Refused, match=r"not SELEC$"):
        guard("SELEC * FROM x", "sqlite", 10, T)
    with pytest.raises(Refused, match="not on the list of allowed functions"):
        guard("SELECT some_udf(1)", "sqlite", 10, T)


def test_refused_and_parse_error_are_value_errors_and_distinct():
    assert issubclass(Refused, ValueError) and issubclass(ParseError, ValueError)
    assert not issubclass(Refused, ParseError) and not issubclass(ParseError, Refused)


def test_unknown_dialect_and_bad_cap_are_rejected():
    with pytest.raises(ValueError, match="unsupported dialect"):
        guard("SELECT 1", "oracle", 10, T)
    with pytest.raises(ValueError, match="max_rows"):
        guard("SELECT 1", "sqlite", 0, T)


def test_every_write_is_also_in_the_refused_list():
    assert all(w in REFUSED for w in WRITES)


def test_the_tables_given_are_the_reflected_schema():
    """The pipeline passes `/schema`'s table names; these tests use the same list."""
    info = schema.describe(databases.get("chinook"))
    assert sorted(t.name for t in info.tables) == sorted(T)


GOLD = Path(__file__).resolve().parent.parent / "eval"


def _gold_and_bank() -> list[str]:
    files = [GOLD / "testset" / "chinook.yaml", GOLD / "bank" / "chinook.yaml"]
    return [item["sql"] for f in files for item in yaml.safe_load(f.read_text())]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_gold_and_bank_query_passes_the_allow_lists(dialect: str):
    """The allow-lists (tables, functions) are not stricter than the evaluation's own SQL, in SQLite
    as written and in PostgreSQL as the example bank transpiles it (pipeline/examples.py)."""
    queries = _gold_and_bank()
    assert len(queries) > 100
    if dialect == "postgresql":
        queries = [sqlglot.transpile(q, read="sqlite", write="postgres", identify=True)[0] for q in queries]
    refused = {}
    for sql in queries:
        try:
            guard(sql, dialect, 100, T)
        except (Refused, ParseError) as err:
            refused[sql] = str(err)
    assert refused == {}


@pytest.mark.parametrize(
    ("sql", "dialect", "named"),
    [
        ("SELECT * FROM pragma_database_list", "sqlite", "pragma_database_list"),
        ("SELECT * FROM pragma_compile_options", "sqlite", "pragma_compile_options"),
        ("SELECT * FROM pragma_index_list('Artist')", "sqlite", "pragma_index_list()"),
        ('SELECT * FROM "Secrets"', "sqlite", "Secrets"),
        ("SELECT * FROM pg_stat_activity", "postgresql", "pg_stat_activity"),
        ("SELECT current_user", "postgresql", "current_user()"),
        ("SELECT inet_server_addr()", "postgresql", "inet_server_addr()"),
        ("SELECT 'pg_class'::regclass", "postgresql", "REGCLASS"),
        ('SELECT * FROM other_schema."Artist"', "postgresql", "other_schema"),
    ],
)
def test_refusals_name_the_table_or_function(sql: str, dialect: str, named: str):
    with pytest.raises(Refused) as info:
        guard(sql, dialect, 10, T)
    assert named in str(info.value)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "sql",
    [
        'WITH a AS (SELECT "ArtistId" FROM "Album"), b AS (SELECT * FROM a) SELECT count(*) FROM b',
        "WITH t AS (SELECT 1 AS n) SELECT * FROM t x JOIN t y ON x.n = y.n",
        'SELECT * FROM (WITH s AS (SELECT "Name" FROM "Genre") SELECT * FROM s) q',
        'SELECT * FROM "Genre" WHERE "GenreId" IN (WITH g AS (SELECT 1 AS n) SELECT n FROM g)',
        'SELECT "Name" FROM artist',  # names compare case-insensitively, as SQLite does
        "SELECT current_date, current_timestamp",
    ],
)
def test_ctes_own_tables_and_harmless_functions_pass(sql: str, dialect: str):
    assert guard(sql, dialect, 10, T).endswith("LIMIT 11")


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(
    "sql",
    [
        "WITH t AS (SELECT * FROM t) SELECT * FROM t",  # a non-recursive CTE does not see itself
        "SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) q, s",  # out of the CTE's scope
        'WITH x AS (SELECT 1) SELECT * FROM x, "Secrets" AS x',  # an alias is not a CTE
        "WITH x AS (SELECT 1) SELECT * FROM other.x",  # a qualified name is never a CTE
    ],
)
def test_a_cte_name_covers_only_what_sql_scoping_says(sql: str, dialect: str):
    with pytest.raises(Refused, match="table"):
        guard(sql, dialect, 10, T)
