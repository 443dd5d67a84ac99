"""Load generator: N async HTTP clients, each sending its next request as soon as the last returns."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


Done = tuple[float, float, float, int]  # start, first token, end, completion tokens


async def _generate(http: httpx.AsyncClient, request: dict) -> Done:
    """/generate answers once, so its first token is only seen with the last."""
    t0 = time.perf_counter()
    resp = await http.post("/generate", json={"requests": [request]})
    resp.raise_for_status()
    [result] = resp.json()
    if result["finish_reason"] == "error":
        raise RuntimeError(result["error"])
    end = time.perf_counter()
    return t0, end, end, result["completion_tokens"]


async def _stream(http: httpx.AsyncClient, request: dict) -> Done:
    """/stream sends newline-delimited events; time to first token is the first event's arrival."""
    t0 = time.perf_counter()
    first, last = None, {}
    async with http.stream("POST", "/stream", json={"job": request}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.strip():
                first = first or time.perf_counter()
                last = json.loads(line)
    if last.get("finish_reason") in (None, "error"):
        raise RuntimeError(f"stream ended badly: {last}")
    return t0, first or t0, time.perf_counter(), last["completion_tokens"]


async def _run(url: str, endpoint: str, request: dict, clients: int, per_client: int) -> list[Done]:
    call = _stream if endpoint == "stream" else _generate
    out: list[Done] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            out.append(await call(http, request))

    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return out


def measure(
    url: str, request: dict[str, Any], clients: int, per_client: int, endpoint: str
) -> dict[str, Any]:
    """One warm-up round (one request per client), then `per_client` measured requests per client."""
    asyncio.run(_run(url, endpoint, request, clients, 1))
    done = asyncio.run(_run(url, endpoint, request, clients, per_client))
    wall = max(d[2] for d in done) - min(d[0] for d in done)
    latencies = [end - start for start, _, end, _ in done]
    ttfts = [first - start for start, first, _, _ in done]
    tokens = sum(d[3] for d in done)
    row = {
        "concurrency": clients,
        "requests": len(done),
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(done) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": percentile(latencies, 99),
        "mean_s": statistics.fmean(latencies),
        "ttft_p50_s": statistics.median(ttfts) if endpoint == "stream" else None,
        "ttft_p99_s": percentile(ttfts, 99) if endpoint == "stream" else None,
    }
    print(f"  served c={clients:4d}: {row['tokens_per_s']:9.1f} tok/s  p50 {row['p50_s']:6.2f} s", flush=True)
    return row
