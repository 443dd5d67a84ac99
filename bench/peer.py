"""askdb against a peer on the same weights: `/v1/chat/completions` of the AskDB service and of
`transformers serve --continuous-batching` (the transformers library's own OpenAI-compatible
server), same prompts, same machine, side by side, streaming (time to first token) and not.

    python -m bench.peer                                 # CPU: SmolLM2-135M from the store, 32 tokens
    python -m bench.peer --shape llama-1b --device cuda --embed-base DIR --tokens 128   # GPU

Each of `--concurrency` closed-loop clients sends `--rounds` requests, each one after the last
returned (after a warm-up request per client). Every request must produce exactly `--tokens`
tokens (askdb: `ignore_eos`; transformers serve: `min_new_tokens`), so both servers do the same
work; a server that returns fewer is reported, not averaged in. Servers run one after the other,
never together. Prints a table, writes `peer.json` and `peer.png` under `--out`. On shared
machines absolute numbers are noise: the ratios of one run are the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai

from bench.loadgen import percentile
from tests.servers import BentoServer, free_port

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a database index works.",
    "Describe the water cycle for a child.",
    "List some uses of SQL window functions and explain them.",
]
Server = tuple[str, str, dict]  # base url, model name, extra body


@contextlib.contextmanager
def askdb(tag: str, device: str, env: dict[str, str]) -> Iterator[Server]:
    extra_env = {"BENTOML_DO_NOT_TRACK": "true", "ASKDB_LLM_MODEL": tag, "ASKDB_DEVICE": device, **env}
    with BentoServer("service:AskDB", env=extra_env) as server:
        yield f"{server.url}/v1", "local", {"ignore_eos": True}


@contextlib.contextmanager
def peer(path: Path, tokens: int, device: str, out: Path) -> Iterator[Server]:
    port = free_port()
    exe = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    cmd = [exe, "serve", str(path), "--continuous-batching", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--device", device, *(["--dtype", "bfloat16"] if device.startswith("cuda") else [])]
    log = (out / f"transformers-serve-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:  # it has /health, not /readyz
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not start; see {log.name}")
            time.sleep(0.5)  # readiness poll interval
        config = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
        yield f"{url}/v1", str(path), {"generation_config": json.dumps(config)}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        log.close()


async def one(client: openai.AsyncOpenAI, server: Server, prompt: str, tokens: int, stream: bool) -> dict:
    _, model, extra = server
    args: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "extra_body": extra,
    }
    t0 = time.perf_counter()
    if not stream:
        reply = await client.chat.completions.create(**args)
        end = time.perf_counter()
        return {
            "ttft_s": end - t0,
            "total_s": end - t0,
            "tokens": reply.usage.completion_tokens if reply.usage else 0,
        }
    first, pieces, usage = None, 0, None
    chunks = await client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    async for chunk in chunks:
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces += 1
    end = time.perf_counter()
    return {"ttft_s": (first or end) - t0, "total_s": end - t0, "tokens": usage or pieces}


async def level(server: Server, clients: int, rounds: int, tokens: int, stream: bool) -> dict[str, Any]:
    async with openai.AsyncOpenAI(base_url=server[0], api_key="bench", timeout=1800, max_retries=0) as client:

        async def loop(i: int, n: int) -> list[dict]:
            return [
                await one(client, server, PROMPTS[(i + k) % len(PROMPTS)], tokens, stream) for k in range(n)
            ]

        await asyncio.gather(*(loop(i, 1) for i in range(clients)))  # warm-up: one request per client
        t0 = time.perf_counter()
        runs = [r for rs in await asyncio.gather(*(loop(i, rounds) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    total = [r["total_s"] for r in runs]
    ttft = [r["ttft_s"] for r in runs]
    return {
        "clients": clients,
        "stream": stream,
        "requests": len(runs),
        "short": sum(r["tokens"] != tokens for r in runs),  # answers that did not do the same work
        "tokens_per_s": sum(r["tokens"] for r in runs) / wall,
        "p50_s": percentile(total, 50),
        "p95_s": percentile(total, 95),
        "ttft_p50_s": percentile(ttft, 50) if stream else None,
        "ttft_p95_s": percentile(ttft, 95) if stream else None,
        "wall_s": wall,
    }


def run(servers: dict[str, Any], levels: list[int], rounds: int, tokens: int, modes: list[str]) -> dict:
    results: dict[str, list[dict]] = {}
    for name, start in servers.items():
        with start() as server:
            results[name] = []
            for stream in [m == "stream" for m in modes]:
                for c in levels:
                    row = asyncio.run(level(server, c, rounds, tokens, stream))
                    results[name].append(row)
                    ttft = f", TTFT p50 {row['ttft_p50_s']:.3f} s" if stream else ""
                    print(
                        f"{name} {'stream' if stream else 'plain'} c={c}: {row['tokens_per_s']:.1f} tok/s, "
                        f"p50 {row['p50_s']:.2f} s{ttft}, short answers {row['short']}",
                        flush=True,
                    )
    return results


def table(results: dict[str, list[dict]]) -> str:
    cols = f"{'clients':>8}{'tok/s':>10}{'p50 s':>9}{'p95 s':>9}{'TTFT p50':>10}{'short':>7}"
    head = f"{'server':<20}{'mode':<8}{cols}"
    rows = [head, "-" * len(head)]
    for name, levels in results.items():
        for r in levels:
            ttft = f"{r['ttft_p50_s']:>9.3f}s" if r["stream"] else f"{'-':>10}"
            mode = "stream" if r["stream"] else "plain"
            rows.append(
                f"{name:<20}{mode:<8}{r['clients']:>8}{r['tokens_per_s']:>10.1f}{r['p50_s']:>9.2f}"
                f"{r['p95_s']:>9.2f}{ttft}{r['short']:>7}"
            )
    mine, other = results.get("askdb", []), results.get("transformers-serve", [])
    for a, b in zip(mine, other, strict=False):
        mode = "stream" if a["stream"] else "plain"
        speed = a["tokens_per_s"] / b["tokens_per_s"]
        rows.append(
            f"askdb / transformers-serve, {mode} at {a['clients']:>3} clients: tok/s x{speed:.2f}, "
            f"p50 x{a['p50_s'] / b['p50_s']:.2f}"
            + (f", TTFT p50 x{a['ttft_p50_s'] / b['ttft_p50_s']:.2f}" if a["stream"] else "")
            + " (latency: lower is better)"
        )
    return "\n".join(rows)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, levels in results.items():
        for stream in (False, True):
            rows = [r for r in levels if r["stream"] == stream]
            if not rows:
                continue
            x = [r["clients"] for r in rows]
            label = f"{name} {'stream' if stream else 'plain'}"
            axes[0].plot(x, [r["tokens_per_s"] for r in rows], marker="o", label=label)
            axes[1].plot(x, [r["p50_s"] for r in rows], marker="o", label=label)
            if stream:
                axes[2].plot(x, [r["ttft_p50_s"] for r in rows], marker="o", label=name)
    for ax, title in zip(
        axes, ["tokens/s (all clients)", "latency p50 (s)", "time to first token p50 (s)"], strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent clients")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _weights(args: argparse.Namespace) -> tuple[str, Path]:
    """(store tag, model folder): the default SmolLM2, or a random-weight shape built for the run."""
    import bentoml

    from models.defaults import DEFAULT_LLM_TAG

    if not args.shape:
        model = bentoml.models.get(DEFAULT_LLM_TAG)
        return str(model.tag), Path(model.path)
    from bench.gpu import shapes

    base = Path(args.base) if args.base else Path(bentoml.models.get(DEFAULT_LLM_TAG).path)
    _, folder = shapes.build(args.shape, base, tiny=False, device=args.device)
    if args.embed_base:
        shapes.import_encoder(Path(args.embed_base), device=args.device)
    return shapes.import_shape(args.shape, folder, False), folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="measured requests per client")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--shape", help="a bench.gpu shape with random weights (default: SmolLM2 from the store)"
    )
    parser.add_argument("--base", help="SmolLM2 config + tokenizer folder for --shape (default: the store's)")
    parser.add_argument("--embed-base", help="encoder config folder: random weights imported as the default")
    parser.add_argument("--servers", default="askdb,transformers-serve")
    parser.add_argument("--out", type=Path, default=Path("bench/results/peer"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tag, folder = _weights(args)
    starts = {
        "askdb": lambda: askdb(tag, args.device, {}),
        "transformers-serve": lambda: peer(folder, args.tokens, args.device, args.out),
    }
    servers = {name: starts[name] for name in args.servers.split(",")}
    levels = [int(c) for c in args.concurrency.split(",")]
    results = run(servers, levels, args.rounds, args.tokens, args.modes.split(","))
    print(table(results))
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "tokens": args.tokens, "model": tag}
    meta |= {"device": args.device, "rounds": args.rounds, "weights": "random" if args.shape else "trained"}
    (args.out / "peer.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    plot(results, args.out / "peer.png")
    print(f"wrote {args.out / 'peer.json'} and {args.out / 'peer.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
