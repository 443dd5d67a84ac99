"""askdb's /v1 under an ecosystem load harness (GuideLLM, vLLM's benchmark tool) and under askdb's own
client (bench/peer.py), the same load, side by side: the two must agree on tokens/s within 10%.

    python -m venv .venv-harness && .venv-harness/bin/pip install -r requirements/harness.txt
    python -m bench.harness --guidellm .venv-harness/bin/guidellm          # 1 and 8 streams

GuideLLM lives in a virtual environment of its own: it pins pandas, click and multidict versions
the service does not share. It runs offline with the model's own tokenizer (`--tokenizer
kind=hf_auto,model=<store folder>`) and synthetic prompts of `--prompt-tokens`; every request asks
for exactly `--tokens` tokens (GuideLLM sends `ignore_eos`, which askdb honours). askdb's client
then runs the same closed loop: as many concurrent streaming clients, the same number of requests,
prompts of the same length, `ignore_eos`, and both leave one warm-up request per stream out of
their figures (GuideLLM: its `warmup` phase). The server and the load generators run on separate
CPUs (`--client-cpus`, the last ones; the server gets the rest): on a small CPU machine GuideLLM's
own processes would otherwise take cycles from the model they measure. One server serves both, one
harness at a time, taking turns `--repeats` times (G A, A G, G A, ...) so that a machine whose speed
drifts (other load) moves both alike; the figure compared is each harness's median tokens/s over its
turns.
GuideLLM's start-up check probes `/health`, which askdb does not serve (its probes are `/livez` and
`/readyz`), so it is turned off (`validate_backend=false`); the server is ready before it starts.
Prints a table, writes `harness.json` (with GuideLLM's whole report) and `harness.png` under `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import peer

AGREE = 0.10  # |guidellm - askdb| / askdb on tokens/s
TEXT = " ".join(peer.PROMPTS * 64).split()  # words to cut prompts of a given length from


def prompts_of(tokenizer_dir: Path, tokens: int, count: int) -> list[str]:
    """`count` distinct prompts of `tokens` tokens each (the model's own tokenizer)."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    words = TEXT
    out = []
    for i in range(count):
        ids = tok(" ".join(words[i:] + words[:i]), add_special_tokens=False)["input_ids"][:tokens]
        out.append(tok.decode(ids))
    return out


def guidellm(
    exe: str, url: str, tokenizer_dir: Path, streams: int, requests: int, args: Any, out: Path
) -> dict:
    report = out / f"guidellm-c{streams}.json"
    cmd = [
        exe, "run",
        "--backend", f"kind=openai_http,target={url},model=local,validate_backend=false",  # askdb: /readyz
        # warm-up as askdb's client does; GuideLLM's phase of `streams` requests leaves `streams` + 1
        # out of its figures (measured: 2 at 1 stream, 9 at 8), so it sends that many more
        "--profile", f"kind=concurrent,streams={streams},warmup={streams}",
        "--constraint", f"kind=max_requests,count={requests + streams + 1}",
        "--data", f"kind=synthetic_text,prompt_tokens={args.prompt_tokens},output_tokens={args.tokens}",
        "--tokenizer", f"kind=hf_auto,model={tokenizer_dir}",
        "--output", f"kind=json,path={report}",
        "--disable-console-interactive",
    ]  # fmt: skip
    log = out / f"guidellm-c{streams}.log"
    with log.open("wb") as sink:
        subprocess.run(
            cmd, check=True, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    [bench] = json.loads(report.read_text())["benchmarks"]
    m = bench["metrics"]

    def ok(name: str, stat: str = "median") -> float:
        return float(m[name]["successful"][stat])

    return {
        "clients": streams,
        "requests": int(m["request_totals"]["successful"]),
        "errored": int(m["request_totals"]["errored"]),
        "tokens_per_s": ok("output_tokens_per_second", "mean"),  # GuideLLM's own figure
        "ttft_p50_s": ok("time_to_first_token_ms") / 1000,
        "itl_p50_s": ok("inter_token_latency_ms") / 1000,
        "p50_s": ok("request_latency"),
        "wall_s": float(bench["duration"]),
    }


def own(url: str, prompts: list[str], streams: int, rounds: int, tokens: int) -> dict:
    server = (f"{url}/v1", "local", {"ignore_eos": True})
    peer.PROMPTS[:] = prompts  # the same prompt lengths as GuideLLM's synthetic ones
    row = asyncio.run(peer.level(server, streams, rounds, tokens, stream=True))
    # inter-token latency as GuideLLM defines it: (latency - TTFT) / (tokens - 1), at the medians
    row["itl_p50_s"] = (row["p50_s"] - row["ttft_p50_s"]) / max(tokens - 1, 1)
    return row


def median_turn(runs: list[dict]) -> dict:
    """The turn with the median tokens/s (a whole run, so its other figures belong to it)."""
    return sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]


def table(rows: list[dict]) -> str:
    head = (
        f"{'harness':<10}{'clients':>8}{'requests':>9}{'tok/s':>9}{'TTFT p50':>10}{'ITL p50':>9}{'p50 s':>8}"
    )
    out = [head, "-" * len(head)]
    for r in rows:
        for name in ("guidellm", "askdb"):
            x = r[name]
            out.append(
                f"{name:<10}{x['clients']:>8}{x['requests']:>9}{x['tokens_per_s']:>9.1f}"
                f"{x['ttft_p50_s']:>9.3f}s{x['itl_p50_s'] * 1000:>7.1f}ms{x['p50_s']:>8.2f}"
            )
        out.append(
            f"  tokens/s: guidellm / askdb = {r['ratio']:.3f} (medians of "
            f"{len(r.get('turn_ratios', [1]))} turns each; per turn "
            f"{', '.join(f'{x:.2f}' for x in r.get('turn_ratios', []))}) "
            f"({'agree' if r['agree'] else 'DISAGREE'} within 10%)"
        )
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = [r["askdb"]["clients"] for r in rows]
    for name in ("guidellm", "askdb"):
        for ax, key, scale in zip(
            axes, ("tokens_per_s", "ttft_p50_s", "itl_p50_s"), (1, 1, 1000), strict=True
        ):
            ax.plot(x, [r[name][key] * scale for r in rows], marker="o", label=name)
    for ax, title in zip(
        axes, ("output tokens/s", "TTFT p50 (s)", "inter-token latency p50 (ms)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("concurrent streams")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--guidellm", default=shutil.which("guidellm") or "guidellm")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rounds", type=int, default=4, help="requests per stream")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="turns per harness, alternating")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--client-cpus", type=int, default=1, help="CPUs for the load generators")
    parser.add_argument("--out", type=Path, default=Path("bench/results/harness"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import bentoml

    from models.defaults import DEFAULT_LLM_TAG

    model = bentoml.models.get(DEFAULT_LLM_TAG)
    folder = Path(model.path)
    rows = []
    cpus = sorted(os.sched_getaffinity(0))
    clients = set(cpus[-args.client_cpus :]) if len(cpus) > args.client_cpus else set(cpus)
    os.sched_setaffinity(0, set(cpus) - clients or clients)  # the server started next inherits these
    with peer.askdb(str(model.tag), args.device, {}) as (v1, _, _):
        os.sched_setaffinity(0, clients)  # askdb's client here, and GuideLLM's processes, inherit these
        url = v1.removesuffix("/v1")
        for c in [int(s) for s in args.concurrency.split(",")]:
            prompts = prompts_of(folder, args.prompt_tokens, max(c, 4))
            turns: dict[str, list[dict]] = {"guidellm": [], "askdb": []}
            for repeat in range(args.repeats):
                order = ("guidellm", "askdb") if repeat % 2 == 0 else ("askdb", "guidellm")
                for name in order:
                    if name == "guidellm":
                        run = guidellm(args.guidellm, url, folder, c, c * args.rounds, args, args.out)
                    else:
                        run = own(url, prompts, c, args.rounds, args.tokens)
                    turns[name].append(run)
            theirs, mine = median_turn(turns["guidellm"]), median_turn(turns["askdb"])
            ratio = theirs["tokens_per_s"] / mine["tokens_per_s"]
            pairs = [g["tokens_per_s"] / a["tokens_per_s"] for g, a in zip(*turns.values(), strict=True)]
            row = {"guidellm": theirs, "askdb": mine, "ratio": ratio, "agree": abs(ratio - 1) <= AGREE}
            rows.append(row | {"turn_ratios": pairs, "turns": turns})
            print(table(rows[-1:]), flush=True)
    print(table(rows))
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "client_cpus": sorted(clients),
        "model": str(model.tag),
        "python": sys.version,
    }
    meta |= {"tokens": args.tokens, "prompt_tokens": args.prompt_tokens, "rounds": args.rounds}
    meta["repeats"] = args.repeats
    (args.out / "harness.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    plot(rows, args.out / "harness.png")
    print(f"wrote {args.out / 'harness.json'} and {args.out / 'harness.png'}")
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
