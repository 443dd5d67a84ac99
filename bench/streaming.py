"""Streaming chat: time to first token and tokens/s per stream at 1/4/16 concurrent streams, askdb
against `transformers serve` (the transformers library's own OpenAI-compatible server) on the same
weights, in one run.

    python -m bench.streaming [--concurrency 1 4 16] [--tokens 32] [--out bench/results]

Both servers get the same OpenAI streaming requests from the official `openai` client and must
produce exactly --tokens tokens (askdb: `ignore_eos`; transformers serve: a `generation_config`
with min_new_tokens), so they do the same work. Servers run one after the other, never together.
On a shared CPU absolute numbers are noise; the ratios in one run are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai

from bench.loadgen import percentile
from models.defaults import DEFAULT_LLM_TAG
from tests.servers import BentoServer, free_port

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a database index works.",
    "Describe the water cycle for a child.",
    "List some uses of SQL window functions and explain them.",
]


def model_dir() -> Path:
    import bentoml

    return Path(bentoml.models.get(DEFAULT_LLM_TAG).path)


@contextlib.contextmanager
def askdb_server() -> Iterator[tuple[str, str, dict]]:
    with BentoServer("service:AskDB", env={"BENTOML_DO_NOT_TRACK": "true"}) as server:
        yield f"{server.url}/v1", "local", {"ignore_eos": True}


@contextlib.contextmanager
def transformers_server(path: Path, tokens: int) -> Iterator[tuple[str, str, dict]]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", str(path), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = open(f"/tmp/transformers-serve-{port}.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:  # it has /health, not /readyz
            with contextlib.suppress(Exception):
                import httpx

                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not start; see {log.name}")
            time.sleep(0.5)  # readiness poll interval
        # exactly `tokens` new tokens, greedy, like askdb's ignore_eos run
        config = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
        yield f"{url}/v1", str(path), {"generation_config": json.dumps(config)}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()


async def one_stream(client: openai.AsyncOpenAI, model: str, prompt: str, tokens: int, extra: dict) -> dict:
    t0 = time.perf_counter()
    first = last = None
    pieces = 0
    usage = None
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    )
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            pieces += 1
    n = usage or pieces
    decode = (last - first) if first and last and last > first else float("nan")
    return {
        "ttft_s": (first or time.perf_counter()) - t0,
        "total_s": time.perf_counter() - t0,
        "tokens": n,
        "tokens_per_s": (n - 1) / decode if decode == decode and n > 1 else float("nan"),
    }


async def level(base_url: str, model: str, extra: dict, streams: int, tokens: int) -> dict[str, Any]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="bench", timeout=900, max_retries=0) as client:
        await one_stream(client, model, PROMPTS[0], 4, extra | _short(extra, 4))  # warm-up
        t0 = time.perf_counter()
        runs = await asyncio.gather(
            *(one_stream(client, model, PROMPTS[i % len(PROMPTS)], tokens, extra) for i in range(streams))
        )
        wall = time.perf_counter() - t0
    ttft = [r["ttft_s"] for r in runs]
    tps = [r["tokens_per_s"] for r in runs if r["tokens_per_s"] == r["tokens_per_s"]]
    return {
        "streams": streams,
        "ttft_p50_s": percentile(ttft, 50),
        "ttft_p95_s": percentile(ttft, 95),
        "tps_p50": percentile(tps, 50),
        "tps_p95": percentile(tps, 95),  # per-stream decode rate (95th percentile = faster streams)
        "total_tokens_per_s": sum(r["tokens"] for r in runs) / wall,
        "tokens": [r["tokens"] for r in runs],
        "wall_s": wall,
    }


def _short(extra: dict, tokens: int) -> dict:
    if "generation_config" in extra:
        return {"generation_config": json.dumps({"max_new_tokens": tokens, "do_sample": False})}
    return {}


def run(concurrency: list[int], tokens: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {}
    servers = {"askdb": askdb_server, "transformers-serve": lambda: transformers_server(model_dir(), tokens)}
    for name, start in servers.items():
        with start() as (url, model, extra):
            results[name] = []
            for c in concurrency:
                results[name].append(asyncio.run(level(url, model, extra, c, tokens)))
                row = results[name][-1]
                print(
                    f"{name} {c} streams: TTFT p50 {row['ttft_p50_s']:.2f}s, tok/s p50 {row['tps_p50']:.2f}, "
                    f"total {row['total_tokens_per_s']:.2f} tok/s",
                    flush=True,
                )  # progress on long runs
    return results


def table(results: dict[str, list[dict]]) -> str:
    cols = ["TTFT p50", "TTFT p95", "tok/s p50", "tok/s p95", "total tok/s"]
    head = f"{'server':<20}{'streams':>8}" + "".join(f"{c:>12}" for c in cols)
    rows = [head, "-" * len(head)]
    for name, levels in results.items():
        for r in levels:
            rows.append(
                f"{name:<20}{r['streams']:>8}{r['ttft_p50_s']:>11.2f}s{r['ttft_p95_s']:>11.2f}s"
                f"{r['tps_p50']:>12.2f}{r['tps_p95']:>12.2f}{r['total_tokens_per_s']:>12.2f}"
            )
    base, other = results.get("askdb", []), results.get("transformers-serve", [])
    for a, b in zip(base, other, strict=False):
        speed = a["total_tokens_per_s"] / b["total_tokens_per_s"]
        ttft = a["ttft_p50_s"] / b["ttft_p50_s"]
        rows.append(
            f"askdb / transformers-serve at {a['streams']:>2} streams: total tok/s x{speed:.2f}, "
            f"TTFT p50 x{ttft:.2f} (lower is better)"
        )
    return "\n".join(rows)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, levels in results.items():
        x = [r["streams"] for r in levels]
        axes[0].plot(x, [r["ttft_p50_s"] for r in levels], marker="o", label=f"{name} p50")
        axes[0].plot(x, [r["ttft_p95_s"] for r in levels], marker="x", linestyle="--", label=f"{name} p95")
        axes[1].plot(x, [r["tps_p50"] for r in levels], marker="o", label=name)
        axes[2].plot(x, [r["total_tokens_per_s"] for r in levels], marker="o", label=name)
    for ax, title in zip(
        axes, ["time to first token (s)", "tokens/s per stream (p50)", "total tokens/s"], strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent streams")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results = run(args.concurrency, args.tokens)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "tokens": args.tokens,
        "model": DEFAULT_LLM_TAG,
    }
    (args.out / "streaming.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    plot(results, args.out / "streaming.png")
    print(f"wrote {args.out / 'streaming.json'} and {args.out / 'streaming.png'}")


if __name__ == "__main__":
    main()
