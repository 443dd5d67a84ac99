"""Load generator: N async HTTP clients, each sending its next request as soon as the last returns."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _client(http: httpx.AsyncClient, body: dict, n: int, out: list[tuple[float, float, int]]) -> None:
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await http.post("/generate", json=body)
        resp.raise_for_status()
        [result] = resp.json()
        if result["finish_reason"] == "error":
            raise RuntimeError(result["error"])
        out.append((t0, time.perf_counter(), result["completion_tokens"]))


async def _run(url: str, body: dict, clients: int, per_client: int) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        await asyncio.gather(*(_client(http, body, per_client, out) for _ in range(clients)))
    return out


def measure(url: str, request: dict[str, Any], clients: int, per_client: int) -> dict[str, Any]:
    """One warm-up round (one request per client), then `per_client` measured requests per client."""
    body = {"requests": [request]}
    asyncio.run(_run(url, body, clients, 1))
    done = asyncio.run(_run(url, body, clients, per_client))
    wall = max(end for _, end, _ in done) - min(start for start, _, _ in done)
    latencies = [end - start for start, end, _ in done]
    tokens = sum(n for _, _, n in done)
    row = {
        "concurrency": clients,
        "requests": len(done),
        "tokens_per_s": tokens / wall,
        "requests_per_s": len(done) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": percentile(latencies, 99),
        "mean_s": statistics.fmean(latencies),
    }
    print(f"  served c={clients:4d}: {row['tokens_per_s']:9.1f} tok/s  p50 {row['p50_s']:6.2f} s", flush=True)
    return row
