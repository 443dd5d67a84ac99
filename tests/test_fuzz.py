"""schemathesis against the running service, every operation, a fixed seed: no 5xx, no schema violation.

The document fuzzed is the service's own: BentoML's OpenAPI document (GET /docs.json on the real
server: every @bentoml.api route, the health and metrics routes, and the mounted /v1 app's routes).
Each operation gets positive cases (valid per the schema: must not fail with 5xx, and a documented
status must match its documented body) and negative cases (invalid per the schema: never a 5xx).
Every error response must carry an `error` with a message.

The server is tests/guarded.py's: API keys on (the run uses the unlimited `full` key) and
ASKDB_MAX_NEW_TOKENS=4, which keeps each generating case cheap: the whole run is a few thousand
cases in a few minutes on 2 cores. /ask runs the full LLM pipeline per case, so it gets fewer.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from api import limits
from tests.guarded import Guarded

SEED = 20261125
# (positive, negative) examples per operation; the ones that generate text or SQL get fewer.
DEFAULT_BUDGET = (200, 200)
BUDGET = {
    "POST /ask": (6, 100),
    "POST /generate": (50, 100),
    "POST /embed": (50, 100),
    "POST /v1/chat/completions": (30, 100),
    "POST /v1/completions": (30, 100),
    "POST /v1/embeddings": (50, 100),
}
BENTO_OPERATIONS = [
    "GET /healthz",
    "GET /livez",
    "GET /readyz",
    "GET /metrics",
    "POST /generate",
    "POST /embed",
    "POST /ask",
    "POST /schema",
    "POST /databases",
    "POST /feedback",
    "POST /examples",
]
OPENAI_OPERATIONS = [
    "GET /v1/models",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
]
CASES: Counter[str] = Counter()


@schemathesis.check
def error_says_what(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every refusal is a JSON body with an `error` carrying a message (API.md: errors everywhere)."""
    if response.status_code < 400:
        return
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        raise AssertionError(f"{response.status_code} without an error message: {response.text[:200]}")


@pytest.fixture(scope="module")
def schema(guarded: Guarded) -> Any:
    doc = httpx.get(f"{guarded.url}/docs.json", headers=guarded.auth("full")).json()
    return schemathesis.openapi.from_dict(doc)


def test_every_operation_is_fuzzed(schema: Any) -> None:
    """The lists below are the service's operations: a new route must be added to the fuzz run."""
    published = {op.ok().label for op in schema.get_all_operations()}
    assert published == set(BENTO_OPERATIONS + OPENAI_OPERATIONS)


NO_INPUT = {"GET /healthz", "GET /livez", "GET /readyz", "GET /metrics", "GET /v1/models"}
RUNS = [
    pytest.param(label, mode, id=f"{label} {mode.value}")
    for label in BENTO_OPERATIONS + OPENAI_OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or label not in NO_INPUT  # nothing to make invalid there
]


@pytest.mark.parametrize(("label", "mode"), RUNS)
def test_fuzz(guarded: Guarded, schema: Any, label: str, mode: GenerationMode) -> None:
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    positive = mode == GenerationMode.POSITIVE
    budget = BUDGET.get(label, DEFAULT_BUDGET)[0 if positive else 1]
    # Invalid data is not required to be refused: pydantic's lax mode accepts "4" for 4 and true
    # for 1.0 by design. It must still never cause a 5xx, and any refusal must say what was wrong.
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance, error_says_what]
    base_url = guarded.url
    headers = guarded.auth("full")
    key = f"{label} {mode.value}"

    @seed(SEED)
    @settings(
        max_examples=budget,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        CASES[key] += 1
        # The service's own request timeout: a slower answer would be its 504, which fails the run.
        response = case.call(base_url=base_url, headers=headers, timeout=limits.REQUEST_TIMEOUT_S + 30)
        case.validate_response(response, checks=checks, headers=headers)

    started = time.monotonic()
    run()
    print(f"{key}: {CASES[key]} cases in {time.monotonic() - started:.1f}s")
    if operation.body or operation.query:
        # Operations with inputs really got their share of cases (ones without inputs have one case).
        assert CASES[key] >= min(budget, 10)
