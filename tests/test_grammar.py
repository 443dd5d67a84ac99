"""Grammar-constrained SQL decoding: the schema grammar's coverage and strictness (llguidance's own
matcher), the real engine masking one row of a batch and leaving the others alone, and /ask with
`options: {"grammar": true}` through the real server."""

from __future__ import annotations

import dataclasses

import bentoml
import httpx
import pytest
import sqlglot
import yaml
from sqlalchemy.dialects import postgresql
from sqlglot import exp

from models.defaults import DEFAULT_LLM_TAG
from pipeline import databases, examples, prompt, schema
from pipeline import grammar as sql_grammar
from pipeline.examples import Example
from providers.local import to_chat_messages
from runners import engine as llm_engine
from runners.engine import Engine
from runners.schemas import GenRequest
from tests.servers import ROOT, BentoServer


@pytest.fixture(scope="module")
def info() -> schema.SchemaInfo:
    return schema.describe(databases.get("chinook"))


@pytest.fixture(scope="module")
def generator() -> Engine:
    return llm_engine.load(bentoml.models.get(DEFAULT_LLM_TAG).path)


@pytest.fixture(scope="module")
def chinook_grammar(info: schema.SchemaInfo) -> str:
    return sql_grammar.for_schema(info)


def _gold(name: str) -> list[str]:
    return [item["sql"] for item in yaml.safe_load((ROOT / name).read_text())]


def test_grammar_accepts_every_gold_and_bank_query(generator: Engine, chinook_grammar: str) -> None:
    queries = _gold("eval/testset/chinook.yaml") + _gold("eval/bank/chinook.yaml")
    assert len(queries) > 100
    refused = [q for q in queries if not generator.grammars.accepts(chinook_grammar, q)]
    assert refused == []
    # the statement may end with the stop string or a newline-separated clause
    assert generator.grammars.accepts(chinook_grammar, "SELECT Name\nFROM Artist;")


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM Artist",
        "UPDATE Track SET UnitPrice = 0",
        "INSERT INTO Artist (Name) VALUES ('x')",
        "DROP TABLE Album",
        "CREATE TABLE x (a INTEGER)",
        "PRAGMA writable_schema = 1",
        "ATTACH DATABASE '/tmp/e.db' AS e",
        "SELECT Name FROM Artist; DROP TABLE Artist",
        "SELECT Playlist_id FROM Playlist",  # invented column
        "SELECT Name FROM Artists",  # invented table (must not read as `Artist s`)
        "SELECT Album.Name FROM Album",  # real column, wrong table
        "SELECT Name FROM Artist\n\nSELECT 1",
    ],
)
def test_grammar_rejects_writes_and_unknown_names(generator: Engine, chinook_grammar: str, sql: str) -> None:
    assert not generator.grammars.accepts(chinook_grammar, sql)


def test_postgresql_grammar_takes_the_transpiled_bank_and_quoted_names(
    generator: Engine, info: schema.SchemaInfo
) -> None:
    pg = dataclasses.replace(
        info, db="pg-grammar", dialect="postgresql", quote=postgresql.dialect().identifier_preparer.quote
    )
    text = sql_grammar.for_schema(pg)
    bank = [e.sql for e in examples.load_bank("chinook", "postgresql")]
    assert [q for q in bank if not generator.grammars.accepts(text, q)] == []
    assert generator.grammars.accepts(text, 'SELECT EXTRACT(YEAR FROM "InvoiceDate")::int FROM "Invoice"')
    # PostgreSQL folds bare names to lower case: bare `Artist` would be a table that does not exist
    assert not generator.grammars.accepts(text, "SELECT Name FROM Artist")


def test_grammar_is_cached_per_schema(info: schema.SchemaInfo) -> None:
    assert sql_grammar.for_schema(info) is sql_grammar.for_schema(info)
    assert "Milliseconds" in sql_grammar.for_schema(info)


def _request(info: schema.SchemaInfo, question: str, grammar: str | None) -> GenRequest:
    shots = [Example("How many albums are there?", "SELECT COUNT(*) FROM Album")]
    messages = prompt.build(question, prompt.compact_schema(info, None), info.dialect, shots)
    return GenRequest(
        messages=to_chat_messages(messages),
        max_new_tokens=60,
        stop=[";", "\n\n"],
        grammar=grammar,
    )


def _names(sql: str) -> tuple[set[str], set[str]]:
    tree = sqlglot.parse_one(sql, read="sqlite")
    aliases = {t.alias for t in tree.find_all(exp.Table) if t.alias}
    return {t.name for t in tree.find_all(exp.Table)}, {c.name for c in tree.find_all(exp.Column)} - aliases


def test_constrained_row_writes_schema_sql_and_leaves_its_neighbour_alone(
    generator: Engine, info: schema.SchemaInfo, chinook_grammar: str
) -> None:
    free = _request(info, "Which customers live in Brazil?", None)
    questions = ["How many playlists are there?", "What is the average invoice total?"]
    constrained = [_request(info, q, chinook_grammar) for q in questions]
    alone = generator.run([free])[0]
    batch = generator.run([free, *constrained])
    assert batch[0].text == alone.text  # the unconstrained row is untouched by its neighbours' masks
    tables = {t.name for t in info.tables}
    columns = {c.name for t in info.tables for c in t.columns}
    for result in batch[1:]:
        assert result.finish_reason == "stop", result
        used_tables, used_columns = _names(result.text)  # parses, or sqlglot raises
        assert used_tables and used_tables <= tables, result.text
        assert used_columns <= columns, result.text
        assert generator.grammars.accepts(chinook_grammar, result.text)


def test_malformed_grammar_is_a_per_request_error(generator: Engine, info: schema.SchemaInfo) -> None:
    good = _request(info, "How many artists are there?", None)
    bad = good.model_copy(update={"grammar": "start: undefined_rule ("})
    results = generator.run([bad, good])
    assert results[0].finish_reason == "error" and "grammar is invalid" in (results[0].error or "")
    assert results[1].finish_reason == "stop" and results[1].text


def test_ask_with_grammar_through_the_server(askdb: BentoServer) -> None:
    body = {
        "question": "How many tracks are longer than 300000 milliseconds?",
        "answer": False,
        "options": {"grammar": True, "max_attempts": 1},
    }
    resp = httpx.post(f"{askdb.url}/ask", json=body, timeout=300)
    assert resp.status_code in (200, 422), resp.text
    data = resp.json()
    sql = data.get("sql") if resp.status_code == 200 else data["error"].get("sql")
    assert sql, data
    used_tables, used_columns = _names(sql)
    info = schema.describe(databases.get("chinook"))
    assert used_tables <= {t.name for t in info.tables}
    assert used_columns <= {c.name for t in info.tables for c in t.columns}
    bad = httpx.post(f"{askdb.url}/ask", json={**body, "options": {"grammar": "maybe"}}, timeout=60)
    assert bad.status_code == 400 and "grammar" in bad.text
