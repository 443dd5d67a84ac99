"""Closed-loop HTTP load: N clients, each sends its next request when the last one returns."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Sample:
    start: float
    end: float
    ok: bool
    tokens: int = 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


async def _client(
    http: httpx.AsyncClient,
    path: str,
    body: Callable[[int], dict],
    ids: list[int],
    tokens: Callable[[dict], int],
    out: list[Sample],
) -> None:
    for i in ids:
        t0 = time.perf_counter()
        resp = await http.post(path, json=body(i))
        ok = resp.status_code == 200
        out.append(Sample(t0, time.perf_counter(), ok, tokens(resp.json()) if ok else 0))


async def _run(
    url: str, path: str, body: Callable[[int], dict], clients: int, total: int, tokens: Callable[[dict], int]
) -> list[Sample]:
    out: list[Sample] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as http:
        shares = [list(range(c, total, clients)) for c in range(clients)]
        await asyncio.gather(*(_client(http, path, body, ids, tokens, out) for ids in shares))
    return out


def measure(
    url: str,
    path: str,
    body: Callable[[int], dict],
    clients: int,
    total: int,
    tokens: Callable[[dict], int] = lambda _: 0,
    warmup: bool = True,
) -> dict[str, Any]:
    """Run `total` requests over `clients` connections (after one warm-up round); summarise."""
    if warmup:
        asyncio.run(_run(url, path, body, clients, clients, tokens))
    samples = asyncio.run(_run(url, path, body, clients, max(total, clients), tokens))
    wall = max(s.end for s in samples) - min(s.start for s in samples)
    lat = [s.end - s.start for s in samples if s.ok]
    return {
        "concurrency": clients,
        "requests": len(samples),
        "failed": sum(not s.ok for s in samples),
        "rps": len(samples) / wall,
        "tokens_per_s": sum(s.tokens for s in samples) / wall,
        "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
        "p95_ms": percentile(lat, 95) * 1000,
    }
