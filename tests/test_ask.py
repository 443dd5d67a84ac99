"""POST /ask through the real server: the API.md contract and its 4xx/422 shapes. Hostile questions
through /ask (both dialects, repair rounds too) are in test_sql_safety.py."""

from __future__ import annotations

import bentoml
import httpx
import pytest

from api.protocol import MAX_QUESTION_CHARS
from tests.servers import BentoServer

ERROR_TYPES = {"unanswerable", "refused", "sql_error", "timeout"}


def post(url: str, body: dict, timeout: float = 600) -> httpx.Response:
    return httpx.post(f"{url}/ask", json=body, timeout=timeout)


def assert_error_shape(resp: httpx.Response) -> dict:
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert set(err) == {"type", "message", "sql"}
    assert err["type"] in ERROR_TYPES and isinstance(err["message"], str) and err["message"]
    assert err["sql"] is None or isinstance(err["sql"], str)
    return err


def test_ask_answers_a_bank_question_in_the_contract_shape(client: bentoml.SyncHTTPClient):
    out = client.ask(question="How many albums are there?", max_rows=10)
    assert set(out) >= {
        "question", "db", "sql", "columns", "rows", "row_count", "truncated",
        "answer", "attempts", "model", "usage", "latency_ms",
    }  # fmt: skip
    assert out["rows"] == [[347]] and out["row_count"] == 1 and out["truncated"] is False
    assert out["db"] == "chinook" and out["sql"].upper().startswith("SELECT")
    assert 1 <= out["attempts"] <= 3
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] > 0
    assert isinstance(out["answer"], str) and out["answer"]
    assert out["model"].startswith("smollm2") and out["latency_ms"] > 0


def test_answer_can_be_skipped_and_rows_are_capped(askdb: BentoServer):
    resp = post(askdb.url, {"question": "List all genres.", "max_rows": 3, "answer": False})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["answer"] == ""
    assert out["row_count"] <= 3 and len(out["rows"]) == out["row_count"]
    if out["row_count"] == 3:  # Genre has 25 rows: a capped answer says so
        assert out["truncated"] is True


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"question": "x" * (MAX_QUESTION_CHARS + 1)}, 400, "question"),
        ({"question": ""}, 400, "question"),
        ({"question": "How many albums?", "max_rows": 0}, 400, "max_rows"),
        ({"question": "How many albums?", "max_rows": 10**9}, 400, "max_rows"),
        ({"question": "How many albums?", "options": {"candidates": 99}}, 400, "candidates"),
        ({"question": "How many albums?", "db": "nope"}, 404, "nope"),
        ({"question": "How many albums?", "model": "gpt-nonexistent"}, 404, "gpt-nonexistent"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(askdb: BentoServer, body: dict, status: int, needle: str):
    resp = post(askdb.url, body)
    assert resp.status_code == status, resp.text
    assert needle in resp.text


def test_a_query_past_the_time_limit_is_a_422_timeout(askdb: BentoServer):
    # a bank question (the model copies its join over InvoiceLine and Track) with a tiny time limit
    body = {"question": "How many times was each track sold?", "options": {"timeout_s": 1e-6}}
    err = assert_error_shape(post(askdb.url, body))
    assert err["type"] == "timeout", err
    assert "cancelled" in err["message"] and err["sql"].upper().startswith("SELECT")
