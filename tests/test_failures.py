"""Each dependency failing in turn, with the real part stopped, against a real `bentoml serve`:
the database down (PostgreSQL stopped with pg_ctl), the database slow (statement timeout), the LLM
runner process killed, and an OpenAI-compatible provider (a second askdb) stopped. Each must give a
clear error with the right status within the configured timeouts, and the service must recover
when the part comes back, without a restart of the service."""

from __future__ import annotations

import json
import shlex
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from pipeline import databases
from pipeline.execute import QueryTimeout, execute
from tests.conftest import TEST_ENV
from tests.pg import PostgresServer
from tests.servers import BentoServer

QUERY_TIMEOUT_S = 2
PROVIDER_TIMEOUT_S = 20
CHAT = [{"role": "user", "content": "Say hi"}]


@pytest.fixture(scope="module")
def provider() -> Iterator[BentoServer]:
    """A second askdb, serving as the OpenAI-compatible provider of route `remote`."""
    with BentoServer("service:AskDB", env=TEST_ENV) as server:
        yield server


@pytest.fixture(scope="module")
def service(postgres: PostgresServer, provider: BentoServer) -> Iterator[BentoServer]:
    providers = {
        "providers": {
            "peer": {
                "base_url": f"{provider.url}/v1",
                "model": "local",
                "timeout": PROVIDER_TIMEOUT_S,
                "max_retries": 0,
            }
        },
        "routes": {"remote": {"weights": {"peer": 1}, "fallbacks": []}},
    }
    env = {
        **TEST_ENV,
        "ASKDB_DATABASES": json.dumps({"pg": postgres.reader_url}),
        "ASKDB_QUERY_TIMEOUT_S": str(QUERY_TIMEOUT_S),
        "ASKDB_PROVIDERS": json.dumps(providers),
    }
    with BentoServer("service:AskDB", env=env) as server:
        yield server


def _pg_ctl(pg: PostgresServer, action: str) -> None:
    data = pg.tmp / "data"
    if action == "stop":
        pg._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        return
    # Start again exactly as before: PostgreSQL recorded its command line in postmaster.opts.
    argv = shlex.split((data / "postmaster.opts").read_text())[1:]
    opts = " ".join(shlex.quote(a) for a in argv if a != str(data) and a != "-D")
    pg._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(pg.tmp / "log"), "-w", "-t", "60", "start")


def _poll(request: callable, ok: callable, timeout: float) -> httpx.Response:
    """Repeat `request` until `ok(response)`; fail with the last response after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        response = request()
        if ok(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.5)  # poll interval


def test_database_down_then_back(service: BentoServer, postgres: PostgresServer) -> None:
    schema = f"{service.url}/schema"
    assert httpx.post(schema, json={"db": "pg"}, timeout=60).status_code == 200
    _pg_ctl(postgres, "stop")
    try:
        started = time.monotonic()
        body = {"db": "pg", "question": "How many artists are there?", "answer": False}
        r = httpx.post(f"{service.url}/ask", json=body, timeout=300)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert error["type"] == "unavailable", error
        assert "database" in error["message"] and "unavailable" in error["message"]
        assert postgres.reader_password not in r.text
        assert time.monotonic() - started < 300
        # /schema answers from its per-process cache of the reflected schema, or says the database is down.
        r = httpx.post(schema, json={"db": "pg"}, timeout=60)
        assert r.status_code == 200 or (r.status_code == 503 and "'pg'" in r.json()["error"]["message"])
        # The other databases are not affected.
        assert httpx.post(schema, json={"db": "chinook"}, timeout=60).status_code == 200
    finally:
        _pg_ctl(postgres, "start")
    # Back without restarting the service: the pool reconnects (pre-ping), /ask reaches the database.
    ask = f"{service.url}/ask"
    r = _poll(lambda: httpx.post(ask, json=body, timeout=300), lambda r: r.status_code != 503, 120)
    assert r.status_code in (200, 422), r.text  # 422: the model's SQL was judged, so it reached the DB
    assert r.status_code == 200 or r.json()["error"]["type"] != "unavailable"


def test_database_slow_is_cut_off_by_the_statement_timeout(
    postgres: PostgresServer, slow_tables: None
) -> None:
    db = databases.open_database("pg", postgres.reader_url)
    try:
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match=f"{QUERY_TIMEOUT_S:g} s"):
            execute(db, 'SELECT COUNT(*) FROM "Artist"', 10, timeout_s=QUERY_TIMEOUT_S)
        assert time.monotonic() - started < QUERY_TIMEOUT_S + 3
    finally:
        db.engine.dispose()


def test_database_slow_through_ask_is_a_422_timeout(service: BentoServer, slow_tables: None) -> None:
    body = {"db": "pg", "question": "How many artists are there?", "answer": False}
    r = httpx.post(f"{service.url}/ask", json=body, timeout=600)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "timeout", error
    assert f"{QUERY_TIMEOUT_S:g} s" in error["message"] and error["sql"]


def _runner(server: BentoServer, name: str) -> psutil.Process:
    main = psutil.Process(server.proc.pid)
    for child in main.children(recursive=True):
        if f"--service-name {name} " in " ".join(child.cmdline()) + " ":
            return child
    raise LookupError(f"no {name} process under {server.proc.pid}")


def test_llm_runner_killed_is_restarted(service: BentoServer) -> None:
    generate = f"{service.url}/generate"
    body = {"prompt": "Hello", "max_new_tokens": 2}
    assert httpx.post(generate, json=body, timeout=120).status_code == 200
    runner = _runner(service, "askdb-llm")
    runner.send_signal(signal.SIGKILL)
    runner.wait(30)
    started = time.monotonic()
    r = httpx.post(generate, json=body, timeout=120)
    # While the runner is down: 503 naming it (or, if BentoML's arbiter was quicker, a normal answer).
    if r.status_code != 200:
        assert r.status_code == 503, r.text
        assert "LLM runner" in r.json()["error"]["message"] and "retry-after" in r.headers
    assert time.monotonic() - started < 60
    r = _poll(lambda: httpx.post(generate, json=body, timeout=120), lambda r: r.status_code == 200, 300)
    assert r.status_code == 200, r.text
    assert _runner(service, "askdb-llm").pid != runner.pid  # a new runner process, same service
    assert service.proc.poll() is None


def test_provider_down_then_back(service: BentoServer, provider: BentoServer) -> None:
    chat = f"{service.url}/v1/chat/completions"
    body = {"model": "remote", "messages": CHAT, "max_tokens": 3}
    r = httpx.post(chat, json=body, timeout=120)
    assert r.status_code == 200 and r.headers.get("x-askdb-provider") == "peer", r.text
    provider.stop()
    try:
        started = time.monotonic()
        r = httpx.post(chat, json=body, timeout=120)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert "remote" in error["message"] and "unreachable" in error["message"]
        assert time.monotonic() - started < PROVIDER_TIMEOUT_S + 5
    finally:
        provider.start()
    r = _poll(lambda: httpx.post(chat, json=body, timeout=120), lambda r: r.status_code == 200, 60)
    assert r.status_code == 200, r.text
