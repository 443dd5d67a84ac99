"""How far the engine's batched output is from single-row output on a GPU, in float32 and bfloat16.

    python -m bench.gpu.tolerance --base DIR [--shape llama-1b] [--out DIR]

For each dtype: 16 prompts of different lengths, each (a) through transformers' own `generate`
alone, (b) through the engine alone, (c) through the engine together with 48 other requests
(every row at its own position, CUDA graphs on). Reported per pair: the share of requests whose
greedy tokens are identical, the mean length of the identical prefix, and the largest difference
of the chosen token's log-probability over identical prefixes. float32 should agree exactly;
bfloat16 differs by rounding (batched matmuls accumulate in another order), and with random
weights near-ties between the top tokens are common, so bf16 divergence here is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import shapes
from runners.engine import Engine
from runners.model import LoadedModel
from runners.sampling import Variant
from runners.schemas import GenRequest, GenResult

NEW = 48


def _prompts(tokenizer: Any) -> list[str]:
    words = ["data", "query", "table", "row", "index", "join", "select", "group", "order", "limit"]
    return [" ".join(words[(i + k) % len(words)] for k in range(4 + 7 * i)) for i in range(16)]


def _reqs(prompts: list[str]) -> list[GenRequest]:
    return [GenRequest(prompt=p, max_new_tokens=NEW, ignore_eos=True, logprobs=0) for p in prompts]


def _ids(lm: LoadedModel, result: GenResult) -> list[str]:
    return [lp.token for lp in result.logprobs or []]


def _hf(lm: LoadedModel, prompt: str) -> list[str]:
    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(lm.device)
    out = lm.model.generate(**ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None, pad_token_id=0)
    return [lm.tokenizer.decode([int(t)]) for t in out[0, ids["input_ids"].shape[1] :]]


def _compare(
    a: list[list[str]], b: list[list[str]], lp_a: list[list[float]], lp_b: list[list[float]]
) -> dict:
    same, prefix, worst = 0, [], 0.0
    for ta, tb, la, lb in zip(a, b, lp_a, lp_b, strict=True):
        n = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
        same += ta == tb
        prefix.append(n)
        if la and lb:
            worst = max([worst, *(abs(x - y) for x, y in zip(la[:n], lb[:n], strict=False))])
    return {
        "identical": same / len(a),
        "mean_identical_prefix": sum(prefix) / len(prefix),
        "max_logprob_diff": worst,
    }


def check(path: str, dtype: torch.dtype) -> dict[str, Any]:
    lm = LoadedModel.load(path)
    lm.model.to(dtype)
    prompts = _prompts(lm.tokenizer)
    t0 = time.perf_counter()
    engine = Engine(lm, slots=64, context=1024, prefill_chunk=2048, graphs=True)
    graphs = engine.step.warm(512, [Variant(logprobs=True)])
    capture = time.perf_counter() - t0
    hf = [_hf(lm, p) for p in prompts]
    alone = [engine.run([r])[0] for r in _reqs(prompts)]
    fillers = [GenRequest(prompt=p * 3, max_new_tokens=NEW + 20, ignore_eos=True) for p in prompts * 3]
    crowd = engine.run([*_reqs(prompts), *fillers])[: len(prompts)]
    lps = [[lp.logprob for lp in r.logprobs or []] for r in alone]
    lpc = [[lp.logprob for lp in r.logprobs or []] for r in crowd]
    engine.close()
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "graphs_captured": graphs,
        "engine_start_s": capture,
        "engine_alone_vs_hf_generate": _compare([_ids(lm, r) for r in alone], hf, lps, lps),
        "engine_batched_vs_alone": _compare(
            [_ids(lm, r) for r in crowd], [_ids(lm, r) for r in alone], lpc, lps
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu.tolerance", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="SmolLM2 config + tokenizer folder")
    p.add_argument("--shape", default="llama-1b")
    p.add_argument("--out", default="bench/results/gpu")
    p.add_argument("--device", default="cuda", help="cpu: only to check the script (--tiny)")
    p.add_argument("--tiny", action="store_true")
    args = p.parse_args(argv)
    os.environ["ASKDB_DEVICE"] = args.device
    _, folder = shapes.build(args.shape, Path(args.base), tiny=args.tiny, device=args.device)
    results = [check(str(folder), dtype) for dtype in (torch.float32, torch.bfloat16)]
    for r in results:
        print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tolerance.json").write_text(
        json.dumps({"shape": args.shape, "new_tokens": NEW, "results": results}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
