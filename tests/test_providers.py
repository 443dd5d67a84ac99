"""Providers: configuration and routing (pure), then fallback against real servers: a second askdb
as the external provider (stopped mid-test) and a real HTTP server answering 429/500/slowly."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from observability.quality_log import joined_asks
from providers import LOCAL, ProvidersConfig, Router, UnknownModel
from providers.config import load
from tests.conftest import TEST_ENV
from tests.fake_provider import FLAKY_PORT, FLAKY_RETRIES, PROVIDERS, REMOTE_KEY, REMOTE_PORT, FaultServer
from tests.servers import BentoServer

CHAT = [{"role": "user", "content": "Name one color."}]


# ---- configuration and routing (no server) -------------------------------------------------------
def test_config_from_json_yaml_and_file(tmp_path) -> None:
    from_json = load({"ASKDB_PROVIDERS": json.dumps(PROVIDERS)})
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  p: {base_url: 'http://x/v1', model: m, api_key_env: P_KEY}\ndefault: p\n")
    from_file = load({"ASKDB_PROVIDERS_FILE": str(path)})
    assert from_json.names == [LOCAL, "remote", "flaky", "remote-first", "flaky-first", "split"]
    assert from_file.default == "p" and from_file.providers["p"].timeout == 30.0
    assert load({}).names == [LOCAL]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"providers": {"local": {"base_url": "u", "model": "m"}}}, "reserved"),
        ({"routes": {"r": {"weights": {"nobody": 1}}}}, "unknown provider 'nobody'"),
        ({"routes": {"r": {"weights": {"local": 0}}}}, "positive sum"),
        ({"default": "nowhere"}, "neither a provider nor a route"),
    ],
)
def test_config_rejects_inconsistent_setups(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProvidersConfig.model_validate(raw)


def test_weights_split_traffic_and_fallbacks_follow() -> None:
    cfg = ProvidersConfig.model_validate(
        {
            "providers": {"ext": {"base_url": "http://x/v1", "model": "m"}},
            "routes": {"mix": {"weights": {"local": 0.8, "ext": 0.2}}},
            "default": "mix",
        }
    )
    router = Router(cfg, random.Random(1))
    chains = Counter(router.plan(None).chain for _ in range(2000))
    assert set(chains) == {("local", "ext"), ("ext", "local")}  # each backs up the other
    assert 0.17 < chains[("ext", "local")] / 2000 < 0.23
    assert router.plan("ext").chain == ("ext", "local")  # a provider by name keeps the default's backups
    assert router.plan("smollm2", local_aliases=["smollm2"]).chain[0] == LOCAL
    with pytest.raises(UnknownModel, match="gpt-9"):
        router.plan("gpt-9")


def test_keys_come_from_the_environment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load({"ASKDB_PROVIDERS": json.dumps(PROVIDERS)})
    monkeypatch.setenv("ASKDB_TEST_REMOTE_KEY", REMOTE_KEY)
    assert cfg.providers["remote"].api_key() == REMOTE_KEY
    assert REMOTE_KEY not in cfg.model_dump_json()


# ---- against real servers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote() -> Iterator[BentoServer]:
    """A second askdb on the port the session server's `remote` provider points at; it demands a key."""
    env = {k: v for k, v in TEST_ENV.items() if k != "ASKDB_PROVIDERS"} | {"ASKDB_API_KEYS": REMOTE_KEY}
    server = BentoServer("service:AskDB", port=REMOTE_PORT, env=env)
    with server:
        yield server


@pytest.fixture(scope="module")
def oa(askdb: BentoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{askdb.url}/v1", api_key="unused", max_retries=0, timeout=300)


def _ask(oa: openai.OpenAI, model: str, **extra) -> tuple[str, str]:
    raw = oa.chat.completions.with_raw_response.create(model=model, messages=CHAT, max_tokens=3, **extra)
    reply = raw.parse()
    return raw.headers["x-askdb-provider"], reply.choices[0].message.content


def _quality_dir(server: BentoServer) -> Path:
    """Where a test server writes its quality log (relative paths from its working directory)."""
    return server.cwd / server.env.get("ASKDB_QUALITY_LOG_DIR", "logs/quality")


def _metric(url: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    lines = httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
    return sum(float(x.split()[-1]) for x in lines if x.startswith(name) and all(w in x for w in want))


def test_429_is_retried_then_falls_back(askdb: BentoServer, oa: openai.OpenAI) -> None:
    with FaultServer(FLAKY_PORT, "429") as fault:
        provider, text = _ask(oa, "flaky-first")
        assert provider == "local" and text
        assert fault.hits == 1 + FLAKY_RETRIES  # the openai client's own retries came first
        fault.mode, fault.hits = "500", 0
        assert _ask(oa, "flaky-first")[0] == "local" and fault.hits == 1 + FLAKY_RETRIES
    assert _metric(askdb.url, "askdb_provider_requests_total", provider="flaky", outcome="ratelimit") >= 1
    assert _metric(askdb.url, "askdb_provider_fallbacks_total", provider="flaky", route="flaky-first") >= 2
    assert _metric(askdb.url, "askdb_provider_requests_total", provider="local", outcome="ok") >= 2


def test_timeout_falls_back_while_streaming(oa: openai.OpenAI) -> None:
    with FaultServer(FLAKY_PORT, "slow") as fault:
        stream = oa.chat.completions.with_raw_response.create(
            model="flaky-first", messages=CHAT, max_tokens=3, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
        assert stream.headers["x-askdb-provider"] == "local" and text and fault.hits >= 1


def test_ask_routes_by_model(askdb: BentoServer) -> None:
    unknown = httpx.post(
        f"{askdb.url}/ask", json={"question": "How many artists?", "model": "gpt-9"}, timeout=60
    )
    assert unknown.status_code == 404 and "flaky-first" in unknown.text  # the names it could have used
    with FaultServer(FLAKY_PORT, "429") as fault:
        body = {"question": "How many artists are there?", "model": "flaky-first", "answer": False}
        reply = httpx.post(f"{askdb.url}/ask", json=body, timeout=600)
    assert fault.hits >= 1 + FLAKY_RETRIES  # /ask's chain went to the routed provider first
    assert reply.status_code == 200, reply.text  # then local answered (greedy: its SQL runs)
    local = httpx.post(f"{askdb.url}/generate", json={"prompt": "x", "max_new_tokens": 1}, timeout=300)
    assert reply.json()["model"] == local.json()["model"]  # the runner's tag, not the route's provider


def test_all_providers_down_is_an_openai_error(oa: openai.OpenAI) -> None:
    # `remote` alone (no fallback named) while nothing listens on its port: 503 naming it, no stack trace
    with pytest.raises(openai.APIStatusError) as err:
        oa.chat.completions.create(model="remote", messages=CHAT, max_tokens=3)
    assert err.value.status_code == 503 and "remote" in err.value.body["message"]


def test_remote_askdb_answers_its_route(askdb: BentoServer, remote: BentoServer, oa: openai.OpenAI) -> None:
    assert _ask(oa, "remote-first", temperature=0)[0] == "remote"
    stream = oa.chat.completions.with_raw_response.create(
        model="remote-first", messages=CHAT, max_tokens=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream.parse())
    assert stream.headers["x-askdb-provider"] == "remote" and chunks[-1].usage.completion_tokens >= 1
    body = {"question": "How many artists are there?", "model": "remote-first", "answer": False}
    asked = httpx.post(f"{askdb.url}/ask", json=body, timeout=600)  # /ask reports who answered
    assert asked.status_code == 200 and asked.json()["model"].startswith("remote/"), asked.text
    # ...and so does the quality log: the provider that answered, not the local runner
    [record] = [r for r in joined_asks(_quality_dir(askdb)) if r["request_id"] == asked.json()["request_id"]]
    assert record["provider"] == "remote" and record["model"] == asked.json()["model"]
    # the remote demands its key: the session server sent it, a bare client gets 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{remote.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_split_route_serves_from_both(remote: BentoServer, oa: openai.OpenAI) -> None:
    seen = Counter(_ask(oa, "split")[0] for _ in range(12))  # 50/50: all-one-side odds are 1 in 2048
    assert set(seen) == {"local", "remote"}


def test_secrets_never_leave(askdb: BentoServer, remote: BentoServer, oa: openai.OpenAI) -> None:
    listing = httpx.get(f"{askdb.url}/v1/models", timeout=30).text
    reply = httpx.post(
        f"{askdb.url}/v1/chat/completions",
        json={"model": "remote-first", "messages": CHAT, "max_tokens": 2},
        timeout=300,
    ).text
    for text in (listing, reply, askdb.log_path.read_text(errors="replace")):
        assert REMOTE_KEY not in text and "ASKDB_TEST_REMOTE_KEY" not in text
    assert f":{REMOTE_PORT}" not in listing  # provider URLs stay private too


def test_stopping_the_remote_mid_traffic_causes_no_failures(
    askdb: BentoServer, remote: BentoServer, oa: openai.OpenAI
) -> None:
    """Requests keep flowing while the remote askdb goes down: every one answers, the later ones
    from `local`, and the fallback counter says so. (Runs last: it stops the module's remote.)"""
    before = _metric(askdb.url, "askdb_provider_fallbacks_total", provider="remote")
    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(_ask, oa, "remote-first") for _ in range(4)]
        stopper = pool.submit(remote.stop)
        later = [pool.submit(_ask, oa, "remote-first") for _ in range(4)]
        stopper.result()
        after = [pool.submit(_ask, oa, "remote-first") for _ in range(4)]
        answers = [f.result() for f in first + later + after]  # any failure raises here
    assert all(text for _, text in answers)
    assert {p for p, _ in answers[-4:]} == {"local"}
    assert _metric(askdb.url, "askdb_provider_fallbacks_total", provider="remote") >= before + 4
