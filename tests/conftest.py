"""Shared fixtures: one real `bentoml serve service:AskDB` for the whole test run."""

from __future__ import annotations

from collections.abc import Iterator

import bentoml
import pytest

from tests.servers import BentoServer

# A short batching window makes concurrent test calls share model calls without slowing singles.
TEST_ENV = {"ASKDB_LLM_MAX_BATCH_SIZE": "16", "BENTOML_DO_NOT_TRACK": "true"}


@pytest.fixture(scope="session")
def askdb() -> Iterator[BentoServer]:
    with BentoServer("service:AskDB", env=TEST_ENV) as server:
        yield server


@pytest.fixture(scope="session")
def client(askdb: BentoServer) -> Iterator[bentoml.SyncHTTPClient]:
    with bentoml.SyncHTTPClient(askdb.url, timeout=300) as c:
        yield c
