"""Per-key data policies, enforced by rewriting the query (pipeline/enforce.py), on the real Chinook
SQLite file and a real PostgreSQL 15.

Ground truth comes without the LLM and without the rewriter: a copy of each database holding only
what the policy lets the key see (rows deleted, masked columns overwritten with '***', hidden columns
dropped). Every hostile query of tests/fixtures/hostile_policy.yaml, rewritten and run on the real
data, must give exactly what the original query gives on that copy, and no secret may appear in a cell.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlglot
import yaml
from sqlalchemy import create_engine, text

from api.auth import KeyRing
from api.callers import Callers
from pipeline import databases, schema
from pipeline.enforce import PolicyRefused, cached_view, enforce, view
from pipeline.execute import QueryTimeout, SQLError, execute
from pipeline.guard import Refused, guard
from pipeline.policy import MASK, DataPolicy, PolicyError, parse_rule
from samples import chinook
from tests.pg import PostgresServer

MAX_ROWS = 1000
SUITE = yaml.safe_load((Path(__file__).parent / "fixtures" / "hostile_policy.yaml").read_text())
CASES: list[dict] = SUITE["cases"]
COUNTRIES: list[str] = SUITE["countries"]


@dataclass
class Policed:
    real: databases.Database
    oracle: databases.Database  # the policy's view, materialised
    policy: DataPolicy
    info: schema.SchemaInfo
    secrets: set[str]


def make_policy(dialect: str, db: str) -> DataPolicy:
    rules = {
        t.lower(): parse_rule("emea", db, dialect, t, raw) for t, raw in SUITE["policy"][dialect].items()
    }
    return DataPolicy("emea", db, dialect, rules)


def _secrets(real: databases.Database, oracle: databases.Database, q: str) -> set[str]:
    """Every masked or hidden value and every filtered customer's address, less what the copy shows."""
    countries = ", ".join(f"'{c}'" for c in COUNTRIES)
    with real.engine.connect() as conn:
        masked = text(f"SELECT {q('Email')}, {q('Phone')}, {q('Fax')} FROM {q('Customer')}")
        found = {str(v) for row in conn.execute(masked) for v in row if v}
        found |= {
            str(v)
            for (v,) in conn.execute(
                text(f"SELECT {q('Address')} FROM {q('Customer')} WHERE {q('Country')} NOT IN ({countries})")
            )
        }
    visible: set[str] = set()
    with oracle.engine.connect() as conn:
        for table in schema.describe(oracle).tables:
            for row in conn.execute(text(f"SELECT * FROM {q(table.name)}")):
                visible.update(str(v) for v in row if v is not None)
    return found - visible


def _sqlite_oracle(folder: Path) -> databases.Database:
    path = folder / "oracle.sqlite"
    shutil.copy(chinook.default_path(), path)
    conn = sqlite3.connect(path)
    keep = "('Germany', 'France')"
    conn.executescript(
        f"""
        DELETE FROM Customer WHERE Country NOT IN {keep};
        DELETE FROM Invoice WHERE CustomerId NOT IN (SELECT CustomerId FROM Customer);
        UPDATE Customer SET Email = '{MASK}', Phone = '{MASK}';
        ALTER TABLE Customer DROP COLUMN Fax;
        """
    )
    conn.commit()
    conn.close()
    return databases.open_database("oracle", f"sqlite:///{path}")


def _pg_oracle(pg: PostgresServer) -> databases.Database:
    admin = create_engine(pg.url_for("askdb", pg.password, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("DROP DATABASE IF EXISTS chinook_oracle")
        conn.exec_driver_sql("CREATE DATABASE chinook_oracle")
    admin.dispose()
    url = pg.url_for("askdb", pg.password, "chinook_oracle")
    chinook.load_postgres(url)
    owner = create_engine(url)
    with owner.begin() as conn:
        conn.exec_driver_sql("SET session_replication_role = replica")  # InvoiceLine keeps its lines
        conn.exec_driver_sql(""" DELETE FROM "Customer" WHERE "Country" NOT IN ('Germany', 'France') """)
        conn.exec_driver_sql(
            """ DELETE FROM "Invoice" WHERE "CustomerId" NOT IN (SELECT "CustomerId" FROM "Customer") """
        )
        conn.exec_driver_sql(f""" UPDATE "Customer" SET "Email" = '{MASK}', "Phone" = '{MASK}' """)
        conn.exec_driver_sql(""" ALTER TABLE "Customer" DROP COLUMN "Fax" """)
    owner.dispose()
    return databases.open_database("oracle_pg", url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def policed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Policed]:
    if request.param == "sqlite":
        real = databases.get("chinook")
        oracle = _sqlite_oracle(tmp_path_factory.mktemp("oracle"))
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        real = databases.open_database("pg_policy", pg.reader_url)  # the SELECT-only role
        oracle = _pg_oracle(pg)
    info = schema.describe(real)
    quote = info.quote if real.dialect != "sqlite" else str
    yield Policed(real, oracle, make_policy(real.dialect, real.name), info, _secrets(real, oracle, quote))
    oracle.engine.dispose()


def outcome(db: databases.Database, sql: str) -> tuple[list[str], list[str]] | str:
    """(columns, rows as a sorted multiset), or "error" when the database refuses the query."""
    try:
        result = execute(db, sql, MAX_ROWS, 10.0)
    except (SQLError, QueryTimeout):
        return "error"
    assert not result.truncated, sql  # the comparison must see every row
    # SQLite names an unaliased expression after its text, which the rewrite changes: compare names only
    names = [c.lower() if re.fullmatch(r"\w+", c) else "?" for c in result.columns]
    return names, sorted(repr(r) for r in result.rows)


def rewritten(p: Policed, sql: str) -> tuple[str | None, object]:
    safe = guard(sql, p.real.dialect, MAX_ROWS, [t.name for t in p.info.tables])
    try:
        run, _ = enforce(safe, p.policy, p.info)
    except PolicyRefused:
        return None, "error"
    return run, outcome(p.real, run)


def dialect_sql(case: dict, dialect: str) -> str:
    if dialect == "sqlite":
        return case["sqlite"]
    return case.get("postgresql") or sqlglot.transpile(case["sqlite"], "sqlite", "postgres", identify=True)[0]


def test_hostile_queries_see_only_the_policy_view(policed: Policed) -> None:
    assert len(CASES) >= 40
    answered = 0
    for case in CASES:
        name, expect = case["name"], case.get("expect", "same")
        sql = dialect_sql(case, policed.real.dialect)
        run, got = rewritten(policed, sql)
        names = [t.name for t in policed.info.tables]
        truth = outcome(policed.oracle, guard(sql, policed.real.dialect, MAX_ROWS, names))
        if got != "error":
            assert run is not None and run != sql
            leaked = [s for s in policed.secrets if any(s in row for row in got[1])]  # type: ignore[index]
            assert not leaked, (name, run, leaked[:3])
            answered += 1
        if expect == "same":
            assert got == truth, (name, run)
        elif expect == "fails":
            assert got == "error" and truth == "error", (name, run)
    assert answered >= 40, answered  # the suite mostly runs queries, it does not just refuse them


@pytest.mark.parametrize("policed", ["sqlite"], indirect=True)  # INDEXED BY is SQLite's
def test_a_policed_table_where_no_derived_table_can_stand_is_refused(policed: Policed) -> None:
    with pytest.raises(PolicyRefused, match="the data policy of key 'emea'"):
        enforce("SELECT * FROM Invoice INDEXED BY Customer", policed.policy, policed.info)


def test_a_policy_naming_what_the_database_lacks_refuses_every_query(policed: Policed) -> None:
    d = policed.real.dialect
    q = policed.info.quote if d != "sqlite" else str
    misspelt = parse_rule("emea", "x", d, "Customers", {})
    typo = DataPolicy("emea", policed.real.name, d, {"customers": misspelt})
    # a table typo: no table is policed, so the query runs as it was; a check says so
    assert enforce(f"SELECT * FROM {q('Customer')}", typo, policed.info)[1] == []
    with pytest.raises(PolicyRefused, match="Customers"):
        view(policed.info, DataPolicy("emea", "x", d, {"customer": typo.tables["customers"]}))
    for bad in ({"hide": ["Faxx"]}, {"mask": ["Mail"]}, {"rows": f"{q('Regoin')} = 'EU'"}):
        rule = parse_rule("emea", policed.real.name, d, "Customer", bad)
        policy = DataPolicy("emea", policed.real.name, d, {"customer": rule})
        with pytest.raises(PolicyRefused, match="emea"):
            enforce(f"SELECT {q('LastName')} FROM {q('Customer')}", policy, policed.info)


def test_the_schema_view_hides_columns_and_shows_only_allowed_sample_rows(policed: Policed) -> None:
    seen = cached_view(policed.info, policed.policy, policed.real)  # the chain's way: samples via enforce
    assert cached_view(policed.info, policed.policy, policed.real) is seen  # read once per reflection
    customer = seen.table("Customer")
    names = [c.name for c in customer.columns]
    assert "Fax" not in names and {"Email", "Phone", "Country"} <= set(names)
    assert customer.samples, "sample rows are read again through the policy"
    country, email = names.index("Country"), names.index("Email")
    assert all(row[country] in COUNTRIES and row[email] == MASK for row in customer.samples)
    assert "Fax" in [c.name for c in policed.info.table("Customer").columns]  # the real one is untouched
    text_ = seen.render(["Customer"])
    assert "Fax" not in text_ and not any(s in text_ for s in policed.secrets)


def test_key_specs_carry_policies_and_a_bad_filter_names_key_and_table(tmp_path: Path) -> None:
    good = (
        '[{"name": "emea", "key": "emea-key-0123456789", "admin": true, "policies": {"chinook": '
        '{"Customer": {"rows": "Country = \'France\'", "hide": ["Fax"]}}}}, '
        '{"name": "plain", "key": "plain-key-0123456789"}]'
    )
    env = {"ASKDB_API_KEYS": good}
    callers, ring = Callers.from_env(env), KeyRing.from_env(env)
    emea, plain = ring.authenticate("emea-key-0123456789"), ring.authenticate("plain-key-0123456789")
    policy = callers.policy(emea, "chinook")
    assert policy is not None and policy.key == "emea" and policy.rule("CUSTOMER").hide == {"fax"}
    assert callers.policy(plain, "chinook") is None and callers.policy(emea, "other") is None
    assert callers.is_admin(emea) and not callers.is_admin(plain) and not callers.is_admin(None)
    # a policy given in a key file by the key's hash follows the key too
    keyfile = tmp_path / "keys.yaml"
    keyfile.write_text(
        "keys:\n  - name: hashed\n    sha256: " + "ab" * 32 + "\n    policies:\n"
        "      chinook:\n        Invoice: {rows: \"BillingCountry = 'France'\"}\n"
    )
    assert Callers.from_env({"ASKDB_API_KEY_FILE": str(keyfile)}).policies
    for rows, complaint in [
        ("Country = 'x'; DROP TABLE Customer", "not one read-only condition"),
        ("1 = 1) UNION SELECT * FROM Customer --", "not one read-only condition"),
        ("CustomerId IN (SELECT 1 FROM sqlite_master)", "system table"),
        ("load_extension('x') = 1", "load_extension"),
    ]:
        bad = good.replace("Country = 'France'", rows)
        with pytest.raises(PolicyError) as err:
            Callers.from_env({"ASKDB_API_KEYS": bad})
        message = str(err.value)
        assert "key 'emea'" in message and "table 'Customer'" in message and complaint in message, message
        assert "emea-key-0123456789" not in message
    with pytest.raises(PolicyError, match="database 'nope'"):
        Callers.from_env({"ASKDB_API_KEYS": good.replace('"chinook"', '"nope"')})
    with pytest.raises(PolicyError, match="unknown_rule"):
        Callers.from_env({"ASKDB_API_KEYS": good.replace('"hide"', '"unknown_rule"')})


def test_policy_refusal_is_a_guard_refusal() -> None:
    # the repair loop and /ask treat it like any refusal: a 422 "refused" naming the policy
    assert issubclass(PolicyRefused, Refused)


def test_the_prompt_shows_the_model_only_the_keys_view(policed: Policed) -> None:
    """The chain's own schema and prompt steps: a hidden column is not in what the LLM reads."""
    from pipeline.chain import TextToSQL  # the steps need no model to build a prompt

    def customer_line(policy: DataPolicy | None) -> str:
        state = {"db": policed.real, "policy": policy, "question": "List the customers."}
        state["schema"] = TextToSQL.describe(state)
        state.update(tables=None, examples=[])
        system = str(TextToSQL.build_prompt(state)[0].content)
        return next(line for line in system.splitlines() if line.lstrip('"').startswith("Customer"))

    assert "Fax" in customer_line(None)  # Employee has a Fax too: look at Customer's line only
    assert "Fax" not in customer_line(policed.policy) and "Email" in customer_line(policed.policy)
