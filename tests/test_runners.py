"""The LLM and Embedding runners through the real AskDB service (and alone), with real clients."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path

import bentoml
import httpx
import pytest
import torch

from models.defaults import DEFAULTS
from runners import device
from tests.metrics_util import sample_sum, wait_idle
from tests.servers import ROOT, BentoServer

BATCH = "askdb_embed_batch_rows"  # the embedding runner's batches (runners/batch_queue.py)
STEPS = "askdb_llm_decode_steps"


def model_calls(url: str, method: str = "generate") -> float:
    """Model calls: the LLM engine's decode steps (each serves every running row), the embedding
    runner's batches."""
    if method == "generate":
        return sample_sum(url, STEPS, f"{STEPS}_total")
    return sample_sum(url, BATCH, f"{BATCH}_count")


def idle_model_calls(url: str, method: str = "generate") -> float:
    """The count to take a delta from: once no other request runs, only the test's own add to it."""
    wait_idle(url)
    return model_calls(url, method)


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=300)


def test_generation_is_deterministic_at_temperature_zero(client: bentoml.SyncHTTPClient) -> None:
    a = client.generate(prompt="List three colors:", max_new_tokens=12)
    b = client.generate(prompt="List three colors:", max_new_tokens=12)
    assert a["text"] == b["text"] and a["text"].strip()
    assert a["usage"]["completion_tokens"] == 12 and a["finish_reason"] == "length"


async def _concurrent(url: str, bodies: list[dict], path: str = "/generate") -> list[dict]:
    async with bentoml.AsyncHTTPClient(url, timeout=300) as client:
        method = getattr(client, path.strip("/"))
        return await asyncio.gather(*(method(**b) for b in bodies))


def test_per_request_parameters_hold_in_shared_steps(askdb: BentoServer) -> None:
    bodies = [
        {"prompt": "Count: one, two, three,", "max_new_tokens": 8},
        {"prompt": "Count: one, two, three,", "max_new_tokens": 3},
        {"prompt": "Count: one, two, three,", "max_new_tokens": 24, "stop": [","]},
        {"prompt": "The alphabet: a b c d", "max_new_tokens": 20},
    ]
    before = idle_model_calls(askdb.url)
    results = asyncio.run(_concurrent(askdb.url, bodies))
    steps = model_calls(askdb.url) - before
    assert steps < 8 + 3 + 24 + 20, f"{steps} decode steps: the requests did not share them"
    assert results[0]["usage"]["completion_tokens"] == 8 and results[0]["finish_reason"] == "length"
    assert results[1]["usage"]["completion_tokens"] == 3 and results[1]["finish_reason"] == "length"
    assert results[2]["finish_reason"] == "stop" and "," not in results[2]["text"]
    assert results[2]["usage"]["completion_tokens"] < 24
    assert results[3]["usage"]["completion_tokens"] == 20


def test_sixteen_concurrent_calls_share_decode_steps(askdb: BentoServer) -> None:
    prompts = [f"Question {i}: what is {i} plus {i}? Answer:" for i in range(16)]
    before = idle_model_calls(askdb.url)
    results = asyncio.run(_concurrent(askdb.url, [{"prompt": p, "max_new_tokens": 4} for p in prompts]))
    steps = model_calls(askdb.url) - before
    assert len(results) == 16
    for r in results:  # each stops at its own budget, or earlier on its own EOS
        assert (
            r["usage"]["completion_tokens"] == 4
            if r["finish_reason"] == "length"
            else r["usage"]["completion_tokens"] < 4
        )
    assert steps < 16 * 4 / 2, f"16 concurrent 4-token requests took {steps} decode steps"


def test_batched_results_match_one_by_one(askdb: BentoServer, client: bentoml.SyncHTTPClient) -> None:
    """Greedy decoding in shared steps (each row at its own position) is token-identical to one by one."""
    bodies = [
        {"prompt": "The capital of France is", "max_new_tokens": 10},
        {"prompt": "SELECT name FROM", "max_new_tokens": 10},
        {"prompt": "Once upon a time, in a small village by the sea, there lived", "max_new_tokens": 10},
        {"prompt": "def add(a, b):", "max_new_tokens": 10},
    ]
    before = idle_model_calls(askdb.url)
    batched = asyncio.run(_concurrent(askdb.url, bodies))
    assert model_calls(askdb.url) - before < 4 * 10
    singles = [client.generate(**b) for b in bodies]
    for b, s in zip(batched, singles, strict=True):
        assert b["text"] == s["text"]
        assert b["usage"] == s["usage"]


def test_embeddings_are_normalized_and_meaningful(client: bentoml.SyncHTTPClient) -> None:
    out = client.embed(texts=["How many albums are there?", "Count the albums", "The weather is sunny"])
    assert out["dim"] == 384 and out["model"].startswith("all-minilm-l6-v2:")
    vecs = out["embeddings"]
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in vecs)
    cos = [sum(a * b for a, b in zip(vecs[0], v, strict=True)) for v in vecs[1:]]
    assert cos[0] > cos[1] + 0.2  # paraphrase closer than an unrelated sentence


def test_concurrent_embeds_are_batched(askdb: BentoServer) -> None:
    before = idle_model_calls(askdb.url, "embed")
    results = asyncio.run(_concurrent(askdb.url, [{"texts": [f"text {i}"]} for i in range(24)], "/embed"))
    assert all(len(r["embeddings"]) == 1 for r in results)
    assert model_calls(askdb.url, "embed") - before < 24


BAD = [
    ("/generate", {"prompt": "", "max_new_tokens": 4}, "prompt"),
    ("/generate", {"prompt": "hi", "max_new_tokens": -1}, "max_new_tokens"),
    ("/generate", {"prompt": "hi", "max_new_tokens": 10**6}, "max_new_tokens"),
    ("/generate", {"prompt": "hi", "temperature": 7}, "temperature"),
    ("/generate", {"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/generate", {"max_new_tokens": 4}, "prompt"),
    ("/generate", {"prompt": 12}, "prompt"),
    ("/embed", {"texts": []}, "texts"),
    ("/embed", {"texts": "not a list"}, "texts"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), BAD, ids=[f"{p}-{f}-{i}" for i, (p, _, f) in enumerate(BAD)]
)
def test_bad_input_is_a_4xx_naming_the_field(askdb: BentoServer, path: str, body: dict, field: str) -> None:
    resp = post(askdb.url, path, body)
    assert 400 <= resp.status_code < 500, resp.text
    assert field in resp.text
    assert "Traceback" not in resp.text


def test_prompt_longer_than_context_is_rejected(askdb: BentoServer) -> None:
    resp = post(askdb.url, "/generate", {"prompt": "word " * 6300, "max_new_tokens": 2000})
    assert resp.status_code == 400, resp.text
    assert "context" in resp.text and "8192" in resp.text


def test_embedding_runner_serves_alone_any_imported_model(tmp_path: Path) -> None:
    """Swapping the served model is configuration: import under a new name, point the env at it."""
    home = tmp_path / "bentoml"
    src = next(d for d in DEFAULTS if d.task == "feature-extraction").source()
    subprocess.run(
        [sys.executable, "-m", "models", "import", str(src), "--name", "swapped-encoder", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        check=True,
        capture_output=True,
    )
    # the dtype override reaches the served runner (the default on a bf16 CPU is bfloat16)
    env = {
        "BENTOML_HOME": str(home),
        "ASKDB_EMBED_MODEL": "swapped-encoder:latest",
        "ASKDB_EMBED_DTYPE": "float32",
    }
    with (
        BentoServer("runners.embedding:Embedding", env=env) as server,
        bentoml.SyncHTTPClient(server.url) as c,
    ):
        info = c.info()
        assert info["tag"].startswith("swapped-encoder:") and info["dim"] == 384
        assert info["dtype"] == "float32"
        [vec] = c.embed(texts=["hello"])
        assert len(vec) == 384


def test_llm_runner_serves_alone_with_chat_messages() -> None:
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    with BentoServer("runners.llm:LLM") as server, bentoml.SyncHTTPClient(server.url, timeout=300) as c:
        [result] = c.generate(requests=[{"messages": chat, "max_new_tokens": 12}])
        assert "Paris" in result["text"]
        assert result["prompt_tokens"] > 10  # the chat template wrapped the message
        assert c.info()["device"] == "cpu" and c.info()["dtype"] == "float32"


def test_cpu_dtype_per_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU: the LLM float32, the encoder bf16 only where the CPU has native bf16 matmuls;
    ASKDB_<ROLE>_DTYPE beats ASKDB_DTYPE for its runner alone."""
    monkeypatch.setenv("ASKDB_DEVICE", "cpu")
    for name in ("ASKDB_DTYPE", "ASKDB_LLM_DTYPE", "ASKDB_EMBED_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    assert device.pick("llm")[1] == torch.float32
    assert device.pick("embed")[1] == (torch.bfloat16 if device.cpu_has_bf16() else torch.float32)
    monkeypatch.setenv("ASKDB_DTYPE", "float16")
    monkeypatch.setenv("ASKDB_EMBED_DTYPE", "float32")
    assert device.pick("embed")[1] == torch.float32 and device.pick("llm")[1] == torch.float16
