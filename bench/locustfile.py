"""Load test for any askdb deployment: /ask, /generate and /v1/chat/completions, headless.

    locust -f bench/locustfile.py --headless -u 8 -r 2 -t 2m --host http://localhost:3000 \
        --csv bench/results/load
    askdb report bench/results/load --out bench/results/load-report     # Markdown + PNG
    askdb report bench/results/before bench/results/load --out ...      # two runs side by side

Environment:
  ASKDB_LOCUST_WEIGHTS   task mix, default "ask=1,generate=2,chat=2" (0 drops a task)
  ASKDB_LOCUST_TOKENS    max_new_tokens / max_tokens per generation (default 16)
  ASKDB_LOCUST_MODEL     model for /v1 (default: the first of GET /v1/models)
  ASKDB_API_KEY          sent as a Bearer token when the deployment requires keys
  ASKDB_LOCUST_WAIT      seconds between a user's requests, "min,max" (default "0.5,2")

With --csv PREFIX the run also writes PREFIX_tokens.json (generated tokens per endpoint), which
`askdb report` turns into tokens/s.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections import Counter
from pathlib import Path

from locust import HttpUser, between, events, task

QUESTIONS = [
    "How many artists are there?",
    "How many tracks are longer than five minutes?",
    "List the five most expensive tracks.",
    "Which country has the most customers?",
    "What is the total of all invoices?",
]
PROMPTS = ["The capital of France is", "SQL stands for", "Write one sentence about databases:"]
TOKENS = int(os.environ.get("ASKDB_LOCUST_TOKENS", 16))
_wait = [float(x) for x in os.environ.get("ASKDB_LOCUST_WAIT", "0.5,2").split(",")]
_tokens: Counter[str] = Counter()
_lock = threading.Lock()


def weights() -> dict[str, int]:
    spec = os.environ.get("ASKDB_LOCUST_WEIGHTS", "ask=1,generate=2,chat=2")
    out = {"ask": 0, "generate": 0, "chat": 0}
    for part in filter(None, spec.split(",")):
        name, _, weight = part.partition("=")
        if name.strip() not in out:
            raise SystemExit(f"ASKDB_LOCUST_WEIGHTS: unknown task {name!r}; use ask, generate, chat")
        out[name.strip()] = int(weight)
    return out


def _count(endpoint: str, usage: dict | None) -> None:
    if usage:
        with _lock:
            _tokens[endpoint] += int(usage.get("completion_tokens") or 0)


class AskdbUser(HttpUser):
    wait_time = between(*_wait)
    model: str | None = None

    def on_start(self) -> None:
        if key := os.environ.get("ASKDB_API_KEY"):
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.model = os.environ.get("ASKDB_LOCUST_MODEL")
        if self.model is None and weights()["chat"]:
            resp = self.client.get("/v1/models", name="/v1/models")
            if resp.ok and resp.json().get("data"):
                self.model = resp.json()["data"][0]["id"]

    @task(weights()["ask"])
    def ask(self) -> None:
        body = {"question": random.choice(QUESTIONS)}
        with self.client.post("/ask", json=body, name="/ask", catch_response=True) as resp:
            # 422 is the contract's "cannot answer safely": an answer, not a failure of the service
            if resp.status_code in (200, 422):
                resp.success()
                _count("/ask", resp.json().get("usage"))
            else:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

    @task(weights()["generate"])
    def generate(self) -> None:
        body = {"prompt": random.choice(PROMPTS), "max_new_tokens": TOKENS}
        with self.client.post("/generate", json=body, name="/generate", catch_response=True) as resp:
            if resp.ok:
                _count("/generate", resp.json().get("usage"))
            else:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

    @task(weights()["chat"])
    def chat(self) -> None:
        body = {
            "model": self.model or "default",
            "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
            "max_tokens": TOKENS,
        }
        name = "/v1/chat/completions"
        with self.client.post(name, json=body, name=name, catch_response=True) as resp:
            if resp.ok:
                _count(name, resp.json().get("usage"))
            else:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")


@events.quitting.add_listener
def write_tokens(environment, **kwargs) -> None:
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    if prefix:
        with _lock:
            Path(f"{prefix}_tokens.json").write_text(json.dumps(dict(_tokens), indent=1))
