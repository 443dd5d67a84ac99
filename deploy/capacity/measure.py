"""Measure one LLM runner replica's served throughput on this machine, in bench/gpu's JSON format.

    python -m deploy.capacity.measure --out bench/results/replica_cpu.json [--concurrency 1,4,8,16]

Serves `runners.llm:LLM` alone with real `bentoml serve` (what one askdb-llm pod runs) and loads it
with C closed-loop clients (each sends its next request when the last returns) for each C; rows carry
p50/p95/p99, and the JSON feeds `python -m deploy.capacity`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx
from transformers import AutoTokenizer

from bench.gpu.workload import prompt_of, request
from deploy.local.deployment import free_port
from deploy.local.replica import Release, Replica

ROOT = Path(__file__).resolve().parents[2]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _clients(url: str, body: dict, clients: int, per_client: int) -> list[tuple[float, float, int]]:
    done: list[tuple[float, float, int]] = []

    async def one_client(http: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            resp = await http.post("/generate", json={"requests": [body]})
            resp.raise_for_status()
            done.append((t0, time.perf_counter(), resp.json()[0]["completion_tokens"]))

    async with httpx.AsyncClient(base_url=url, timeout=1800) as http:
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
    return done


def measure(url: str, body: dict, clients: int, per_client: int) -> dict:
    asyncio.run(_clients(url, body, clients, 1))  # warm-up round, not counted
    done = asyncio.run(_clients(url, body, clients, per_client))
    wall = max(e for _, e, _ in done) - min(s for s, _, _ in done)
    lat = [e - s for s, e, _ in done]
    row = {
        "concurrency": clients,
        "requests": len(done),
        "requests_per_s": len(done) / wall,
        "tokens_per_s": sum(n for *_, n in done) / wall,
        "p50_s": _quantile(lat, 0.5),
        "p95_s": _quantile(lat, 0.95),
        "p99_s": _quantile(lat, 0.99),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--per-client", type=int, default=3)
    p.add_argument(
        "--warmup",
        type=int,
        default=24,
        help="1-token calls first: BentoML's batch dispatcher runs its first ~20 calls one by "
        "one to learn its latency model, which is not the steady state being measured",
    )
    args = p.parse_args(argv)

    import bentoml

    from runners import config

    model = bentoml.models.get(config.LLM_MODEL)
    prompt = prompt_of(AutoTokenizer.from_pretrained(model.path), args.prompt_tokens)
    body = request(prompt, args.new_tokens).model_dump()
    # The same process handling as deploy.local's replicas: one `bentoml serve`, reaped whole.
    runner = Replica(
        "measure",
        "",
        free_port(),
        Release("measure", "runners.llm:LLM", cwd=str(ROOT)),
        Path(tempfile.mkdtemp(prefix="askdb-measure-")),
    )
    runner.start()
    try:
        runner.wait_ready(timeout=900)
        url = f"http://127.0.0.1:{runner.port}"
        asyncio.run(_clients(url, {**body, "max_new_tokens": 1}, 1, args.warmup))
        rows = [measure(url, body, c, args.per_client) for c in map(int, args.concurrency.split(","))]
    finally:
        runner.stop(grace_s=30)
    meta = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "model": str(model.tag),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "device": "cpu",
        "note": "shared 2-core CPU; one askdb-llm replica",
        "runner_env": {k: v for k, v in os.environ.items() if k.startswith("ASKDB_")},
    }
    run = {"shape": str(model.tag), "variant": "cpu", "served": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": [run]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
