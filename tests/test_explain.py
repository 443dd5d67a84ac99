"""The plain-language explanation of a query (pipeline/explain.py), rendered from its syntax tree:
on every gold query of the eval (test set and bank, SQLite and transpiled to PostgreSQL) and on
the constructs the gold queries lack."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from eval import scorer
from pipeline.explain import explain
from pipeline.guard import guard

GOLD = [item["sql"] for item in scorer.load_testset() + scorer.load_bank()]


def _expected_words(sql: str, dialect: str) -> list[str]:
    """What a faithful sentence must mention: every table, every filter value, the row limit."""
    tree = sqlglot.parse_one(sql, read=dialect)
    words = [t.name for t in tree.find_all(exp.Table)]
    for clause in (*tree.find_all(exp.Where), *tree.find_all(exp.Having)):
        # values compared with; a function's own arguments (a date format) render as the dialect's
        words += [
            lit.sql(dialect=dialect)
            for lit in clause.find_all(exp.Literal)
            if not lit.find_ancestor(exp.Func)
        ]
    limit = tree.args.get("limit")
    if isinstance(limit, exp.Limit):
        n = int(limit.expression.this)
        words.append("first row only" if n == 1 else f"first {n}")
    if any(o.args.get("desc") for o in tree.find_all(exp.Ordered)):
        words.append("descending")
    return words


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_gold_query_is_explained_naming_its_tables_and_filters(dialect: str) -> None:
    assert len(GOLD) >= 100
    for gold in GOLD:
        sql = gold if dialect == "sqlite" else sqlglot.transpile(gold, "sqlite", dialect, identify=True)[0]
        text = explain(sql, dialect)
        assert text and text[0].isupper() and text.endswith("."), (sql, text)
        missing = [w for w in _expected_words(sql, dialect) if w not in text]
        assert not missing, (sql, text, missing)
        assert "SELECT" not in text, (sql, text)  # the gold queries are all put in words


def test_the_issue_example_reads_as_promised() -> None:
    sql = (
        "SELECT COUNT(*) FROM Invoice JOIN Customer ON Invoice.CustomerId = Customer.CustomerId "
        "WHERE BillingCountry = 'Germany' GROUP BY Country ORDER BY COUNT(*) DESC LIMIT 5"
    )
    assert explain(sql) == (
        "Counts rows of Invoice joined with Customer on CustomerId, where BillingCountry is 'Germany', "
        "grouped by Country, ordered by the number of rows descending, first 5."
    )


def test_the_limit_the_guard_adds_is_not_the_authors_and_is_left_out() -> None:
    safe = guard("SELECT Name FROM Artist", "sqlite", 100, ["Artist"])
    assert "LIMIT 101" in safe
    assert explain(safe, cap=101) == "Lists Name of Artist."
    assert explain(guard("SELECT Name FROM Artist LIMIT 3", "sqlite", 100, ["Artist"]), cap=101).endswith(
        "first 3."
    )


@pytest.mark.parametrize(
    ("sql", "sentence"),
    [
        (
            "SELECT Name FROM Artist UNION ALL SELECT Name FROM Genre",
            "Combines the rows of two queries (keeping duplicates): first, lists Name of Artist; "
            "second, lists Name of Genre.",
        ),
        (
            "WITH big AS (SELECT * FROM Invoice WHERE Total > 10) SELECT COUNT(*) FROM big",
            "With big defined as (lists every column of Invoice, where Total is greater than 10): "
            "counts rows of big.",
        ),
        (
            "SELECT e.LastName FROM Employee e WHERE NOT EXISTS (SELECT 1 FROM Customer c "
            "WHERE c.SupportRepId = e.EmployeeId) AND e.Title NOT LIKE '%Manager%'",
            "Lists e.LastName of Employee (as e), where there is no row in (lists 1 of Customer (as c), "
            "where c.SupportRepId is e.EmployeeId) and e.Title does not match '%Manager%'.",
        ),
        (
            "SELECT Name FROM Track WHERE GenreId IN (SELECT GenreId FROM Genre WHERE Name = 'Jazz') "
            "AND Milliseconds BETWEEN 1000 AND 2000 OR Composer IS NULL",
            "Lists Name of Track, where (GenreId is among (lists GenreId of Genre, where Name is 'Jazz') "
            "and Milliseconds is between 1000 and 2000) or Composer is empty.",
        ),
        (
            "SELECT BillingCountry, AVG(Total) AS avg_total FROM Invoice GROUP BY BillingCountry "
            "HAVING COUNT(*) > 10 ORDER BY avg_total DESC, BillingCountry",
            "Lists BillingCountry and the average of Total (as avg_total) of Invoice, grouped by "
            "BillingCountry, keeping groups where the number of rows is greater than 10, ordered by "
            "avg_total descending and BillingCountry ascending.",
        ),
    ],
)
def test_constructs_beyond_the_gold_queries(sql: str, sentence: str) -> None:
    assert explain(sql) == sentence


def test_policed_tables_are_named_with_the_key() -> None:
    text = explain("SELECT Email FROM Customer", policed=["Customer"], key="emea")
    assert text == "Lists Email of Customer. Customer is read through the data policy of key 'emea'."


def test_sql_that_does_not_parse_gets_no_sentence() -> None:
    assert explain("SELECT FROM WHERE (") == ""
