"""API keys against a real `bentoml serve` (tests/guarded.py): every route guarded, the error shapes,
the official clients' ways of sending a key, per-key databases, and keys kept out of the logs."""

from __future__ import annotations

import bentoml
import httpx
import openai
import pytest

from api.access import AccessPolicy
from api.auth import KeyRing, bearer_token, digest
from tests.guarded import Guarded

OPENAI_ROUTES = [
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
]
PUBLIC = ["/livez", "/readyz", "/metrics"]


def guarded_routes(guarded: Guarded) -> list[tuple[str, str]]:
    """Every operation BentoML publishes (its own OpenAPI document), the docs, and the /v1 routes."""
    doc = httpx.get(f"{guarded.url}/docs.json", headers=guarded.auth("full")).json()
    routes = [
        (m.upper(), p) for p, ops in doc["paths"].items() for m in ops if p not in [*PUBLIC, "/healthz"]
    ]
    return [*routes, ("GET", "/docs.json"), ("GET", "/schema.json"), ("GET", "/"), *OPENAI_ROUTES]


def test_every_route_but_health_needs_a_key(guarded: Guarded) -> None:
    routes = guarded_routes(guarded)
    assert {("POST", "/generate"), ("POST", "/embed")} <= set(routes)
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong-key-000000000000"}, {"Authorization": "Basic x"}):
            r = httpx.request(method, f"{guarded.url}{path}", headers=headers, json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            error = r.json()["error"]
            if path.startswith("/v1/"):
                assert set(error) == {"message", "type", "param", "code"}
                assert error["code"] == "invalid_api_key"
            else:
                assert set(error) == {"type", "message"}
            assert "API key" in error["message"]
        ok = httpx.request(method, f"{guarded.url}{path}", headers=guarded.auth("full"), json={})
        assert ok.status_code != 401, (method, path)


def test_health_and_metrics_stay_open(guarded: Guarded) -> None:
    for path in PUBLIC:
        assert httpx.get(f"{guarded.url}{path}").status_code == 200, path


def test_bentoml_client_sends_its_token(guarded: Guarded) -> None:
    with bentoml.SyncHTTPClient(guarded.url, token=guarded.keys["full"], timeout=120) as client:
        out = client.embed(texts=["hello"])
    assert out["dim"] > 0
    with pytest.raises(bentoml.exceptions.BentoMLException) as err:  # noqa: SIM117
        with bentoml.SyncHTTPClient(guarded.url, token="not-the-key-000000000", timeout=120) as client:
            client.embed(texts=["hello"])
    # The client first reads the service's schema; with a wrong key that read is refused.
    assert "schema" in str(err.value)
    r = httpx.get(f"{guarded.url}/schema.json", headers={"Authorization": "Bearer not-the-key-000000000"})
    assert r.status_code == 401


def test_key_from_file_by_its_hash(guarded: Guarded) -> None:
    r = httpx.post(f"{guarded.url}/embed", headers=guarded.auth("hashed"), json={"texts": ["a"]}, timeout=120)
    assert r.status_code == 200, r.text


def test_openai_client_key(guarded: Guarded) -> None:
    good = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=guarded.keys["full"], max_retries=0)
    assert [m.id for m in good.models.list()]
    bad = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="sk-wrong-0000000000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.models.list()
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"


def test_scoped_key_reaches_only_its_databases(guarded: Guarded) -> None:
    scoped, full = guarded.auth("scoped"), guarded.auth("full")
    schema = f"{guarded.url}/schema"
    assert httpx.post(schema, headers=scoped, json={"db": "chinook"}).status_code == 200
    assert httpx.post(schema, headers=scoped, json={}).status_code == 200  # the default, chinook
    assert httpx.post(schema, headers=full, json={"db": "chinook_copy"}).status_code == 200
    for path in ("/schema", "/ask"):
        r = httpx.post(f"{guarded.url}{path}", headers=scoped, json={"db": "chinook_copy", "question": "x"})
        assert r.status_code == 403, (path, r.text)
        assert "chinook_copy" in r.json()["error"]["message"]
    # Two `db` fields: parsers disagree on which wins, so the request is refused outright.
    dup = b'{"db": "chinook", "db": "chinook_copy"}'
    r = httpx.post(schema, headers={**scoped, "content-type": "application/json"}, content=dup)
    assert r.status_code == 400 and "db" in r.json()["error"]["message"]
    # BentoML also parses forms; a scoped key must use JSON so the check sees the field.
    r = httpx.post(schema, headers=scoped, data={"db": "chinook_copy"})
    assert r.status_code == 415
    listed = httpx.post(f"{guarded.url}/databases", headers=scoped, json={}).json()["databases"]
    assert [d["name"] for d in listed] == ["chinook"]
    listed = httpx.post(f"{guarded.url}/databases", headers=full, json={}).json()["databases"]
    assert {"chinook", "chinook_copy"} <= {d["name"] for d in listed}


ROUTING_ERRORS = [
    ("POST", "//schema", 404, None),
    ("POST", "/SCHEMA", 404, None),
    ("POST", "/x", 404, None),
    ("GET", "/ask", 405, "POST"),
    ("OPTIONS", "/ask", 405, "POST"),  # no CORS preflight headers: an ordinary wrong method
    ("GET", "/databases", 405, "POST"),
    ("POST", "/livez", 405, "GET"),  # health routes too
    ("POST", "/v1/nope", 404, None),
    ("GET", "/v1/chat/completions", 405, "POST"),
    ("DELETE", "/v1/models", 405, "GET"),
]


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"), ROUTING_ERRORS, ids=[f"{m} {p}" for m, p, _, _ in ROUTING_ERRORS]
)
def test_unknown_paths_and_wrong_methods_answer_json_in_the_route_shape(
    guarded: Guarded, method: str, path: str, status: int, allow: str | None
) -> None:
    r = httpx.request(method, f"{guarded.url}{path}", headers=guarded.auth("full"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json", r.text
    error = r.json()["error"]
    expected = {"message", "type", "param", "code"} if path.startswith("/v1/") else {"type", "message"}
    assert set(error) == expected and error["message"].strip()
    if allow is not None:
        assert allow in r.headers["allow"]


def test_keys_never_logged(guarded: Guarded) -> None:
    wrong = "wrong-key-that-must-not-be-logged-1234"
    httpx.post(f"{guarded.url}/embed", headers={"Authorization": f"Bearer {wrong}"}, json={"texts": ["a"]})
    httpx.post(f"{guarded.url}/embed", headers=guarded.auth("full"), json={"texts": ["a"]}, timeout=120)
    log = guarded.server.log_path.read_text(errors="replace")
    assert "refused POST /embed" in log  # the refusal is logged, by path and client
    for secret in [wrong, *guarded.keys.values()]:
        assert secret not in log
        assert digest(secret).hex() not in log


# Configuration parsing: the checks that keep a misconfigured service from starting open or weak.


def test_key_config_formats_and_defaults() -> None:
    ring = KeyRing.from_env({"ASKDB_API_KEYS": "aaaaaaaaaaaaaaaa1, bbbbbbbbbbbbbbbb2"})
    assert [k.name for k in ring.keys] == ["key-1", "key-2"]
    assert ring.authenticate("bbbbbbbbbbbbbbbb2").name == "key-2"
    assert ring.authenticate("bbbbbbbbbbbbbbbb") is None  # a prefix is not the key
    ring = KeyRing.from_env(
        {
            "ASKDB_API_KEYS": '[{"key": "cccccccccccccccc3", "databases": ["*"]}]',
            "ASKDB_RATE_REQUESTS_PER_MIN": "5",
        }
    )
    assert ring.keys[0].databases is None and ring.keys[0].requests_per_minute == 5
    assert not KeyRing.from_env({}).enabled


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("short-key", "at least 16 characters"),
        ('[{"key": "dddddddddddddddd4", "sha256": "' + "0" * 64 + '"}]', "exactly one of"),
        ('[{"key": "dddddddddddddddd4", "rpm": 3}]', "rpm"),
        ("dddddddddddddddd4,dddddddddddddddd4", "configured twice"),
    ],
)
def test_bad_key_config_refused_without_echoing_secrets(raw: str, complaint: str) -> None:
    with pytest.raises(ValueError) as err:
        KeyRing.from_env({"ASKDB_API_KEYS": raw})
    assert complaint in str(err.value)
    assert "dddddddddddddddd4" not in str(err.value) and "short-key" not in str(err.value)


def test_metrics_guard_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASKDB_API_KEYS", "eeeeeeeeeeeeeeee5")
    assert "/metrics" in AccessPolicy.from_env().public_paths
    monkeypatch.setenv("ASKDB_AUTH_METRICS", "1")
    assert "/metrics" not in AccessPolicy.from_env().public_paths


def test_bearer_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None
