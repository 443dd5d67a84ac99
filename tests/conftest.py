"""Shared fixtures: one real `bentoml serve service:AskDB` for the whole test run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pytest

from tests.fake_provider import PROVIDER_ENV
from tests.guarded import guarded  # noqa: F401  (session fixture: AskDB with API keys and caps)
from tests.pg import (
    PostgresServer,
    slow_tables,  # noqa: F401  (fixture: every table of `postgres` reads slowly)
)
from tests.servers import BentoServer

TEST_ENV = {"BENTOML_DO_NOT_TRACK": "true"}
# providers for the OpenAI/provider tests (tests/fake_provider.py): down until those tests start them
TEST_ENV.update(PROVIDER_ENV)


def state_env(tmp: Path) -> dict[str, str]:
    """The audit log and example store of one test server, in a folder of its own."""
    return {
        "ASKDB_AUDIT_LOG": str(tmp / "audit" / "audit.jsonl"),
        "ASKDB_EXAMPLE_STORE": str(tmp / "examples"),
    }


@pytest.fixture(scope="session")
def askdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    env = {**TEST_ENV, **state_env(tmp_path_factory.mktemp("askdb"))}
    with BentoServer("service:AskDB", env=env) as server:
        yield server


@pytest.fixture(scope="session")
def client(askdb: BentoServer) -> Iterator[bentoml.SyncHTTPClient]:
    with bentoml.SyncHTTPClient(askdb.url, timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL 15 with Chinook loaded (tests/pg.py), shared by every test."""
    with PostgresServer() as pg:
        yield pg


@pytest.fixture(scope="session")
def askdb_pg(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """A second AskDB configured through ASKDB_DATABASES with PostgreSQL databases whose URLs carry
    passwords: `pg` (SELECT-only role, password written in the URL), `pg_env` (owner, password from
    ${ASKDB_TEST_PG_PASSWORD}) and `pg_wrong_password` (fails to connect: error paths must not leak).
    Shared by the tests that need PostgreSQL behind the service."""
    databases = {
        "pg": postgres.reader_url,
        "pg_env": postgres.url_for("askdb", "${ASKDB_TEST_PG_PASSWORD}"),
        "pg_wrong_password": postgres.url_for("askdb", "wrong-" + postgres.password),
    }
    env = {**TEST_ENV, "ASKDB_DATABASES": json.dumps(databases), "ASKDB_TEST_PG_PASSWORD": postgres.password}
    env.update(state_env(tmp_path_factory.mktemp("askdb_pg")))
    with BentoServer("service:AskDB", env=env) as server:
        yield server
