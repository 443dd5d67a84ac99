"""`python -m bench.gpu`: the whole GPU benchmark in one command (see README.md here).

For each model shape: build it from config with random weights, import it into the BentoML store via
models.importer, measure (b) the runner's engine in-process, then serve runners.llm:LLM with real
`bentoml serve` and load it with async HTTP clients; (a) is the served one-client row, (c) the
bandwidth roofline. Runner variants (environment presets, or another source tree: `--old-tree`) are
measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import inproc, load, report, roofline, shapes
from bench.gpu.workload import prompt_of, request

# Runner settings compared side by side; each is the environment the runner process starts with.
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},  # the engine as shipped: CUDA graphs for the decode step
    "eager": {"ASKDB_LLM_GRAPHS": "0", "ASKDB_LLM_COMPILE": "0"},  # no graphs, no compile
    "graphs": {"ASKDB_LLM_COMPILE": "0"},  # CUDA graphs over the uncompiled model
    "sync": {"ASKDB_LLM_OVERLAP": "off"},  # graphs, host work after each step instead of during the next
    "stream": {},  # the default engine through /stream (time to first token)
    # `--old-tree DIR`: a checkout from before the engine (its GPU default: adaptive batches of
    # `model.generate` with a static cache + torch.compile), served from that folder
    "old": {},
}
ENDPOINT = {"stream": "stream"}  # variant -> endpoint; the rest use /generate
IN_PROCESS = ("default", "eager", "graphs", "sync")  # variants the new engine can also run in this process


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: only to check the scripts)")
    p.add_argument("--tiny", action="store_true", help="shrink every shape to 2 layers (script check)")
    p.add_argument("--shapes", default=",".join(shapes.SHAPES))
    p.add_argument("--base", help="folder with SmolLM2's config.json + tokenizer (default: the store's copy)")
    p.add_argument("--concurrency", default="1,8,32,64,128")
    p.add_argument("--inprocess-batches", help="batch sizes in-process (default: --concurrency)")
    p.add_argument("--probe-batches", help="batch sizes for in-process-only variants (default: as above)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="measured requests per client (c=1: at least 4)")
    p.add_argument("--reps", type=int, default=2, help="in-process repetitions per batch size")
    p.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--inprocess-variants", help="variants measured in-process (default: --variants; none)")
    p.add_argument("--no-serve", action="store_true", help="in-process and roofline only")
    p.add_argument("--slots", type=int, help="engine slots (default: the runner's own)")
    p.add_argument("--old-tree", help="source folder of the pre-engine runner, for variant 'old'")
    p.add_argument("--out", default="bench/results/gpu")
    return p


def _env_info(device: str) -> dict[str, Any]:
    import bentoml
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "bentoml": bentoml.__version__,
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu",
    }
    if device.startswith("cuda"):
        q = "--query-gpu=driver_version,memory.total,clocks.max.sm"
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", q, "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except OSError:
            info["nvidia_smi"] = None
    return info


def _base(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    import bentoml

    from models.defaults import DEFAULT_LLM_TAG

    return Path(bentoml.models.get(DEFAULT_LLM_TAG).path)


def _apply(env: dict[str, str]) -> None:
    """Set a variant's environment and re-read the runner config, as a fresh runner process would."""
    for key in [k for k in os.environ if k.startswith("ASKDB_LLM_")]:
        if key != "ASKDB_LLM_MODEL":
            del os.environ[key]
    os.environ.update(env)
    import runners.config
    import settings

    settings.get.cache_clear()  # settings are read once per process; a variant is a "new process"
    importlib.reload(runners.config)


def _free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def bench_shape(
    name: str, args: argparse.Namespace, base: Path, bandwidth: float, env: dict, runs: list[dict]
) -> None:
    import bentoml

    import runners.config
    from runners import engine as llm_engine
    from runners.model import LoadedModel

    conc = _ints(args.concurrency)
    t0 = time.perf_counter()
    shape, folder = shapes.build(name, base, tiny=args.tiny, device=args.device)
    tag = shapes.import_shape(name, folder, args.tiny)
    path = bentoml.models.get(tag).path
    print(f"{name}: built + imported {tag} in {time.perf_counter() - t0:.0f} s", flush=True)
    chosen = args.variants if args.inprocess_variants is None else args.inprocess_variants
    inproc_variants = [v for v in chosen.split(",") if v in IN_PROCESS]
    for variant in dict.fromkeys(args.variants.split(",") + inproc_variants):
        venv = {**VARIANTS[variant], "ASKDB_DEVICE": args.device}
        if args.slots:
            venv["ASKDB_LLM_SLOTS"] = str(args.slots)
        if variant == "old":
            venv["ASKDB_LLM_MAX_BATCH_SIZE"] = str(args.slots or 128)
        _apply(venv)
        lm = LoadedModel.load(path)
        prompt = prompt_of(lm.tokenizer, args.prompt_tokens)
        weights = roofline.weight_bytes(lm.model)
        mean_ctx = args.prompt_tokens + args.new_tokens / 2
        run: dict[str, Any] = {
            "shape": name,
            "variant": variant,
            "variant_env": venv,
            "model_tag": tag,
            "parameters": sum(p.numel() for p in lm.model.parameters()),
            "weight_bytes": weights,
            "kv_bytes_per_token": shape.kv_bytes_per_token(),
            "prompt_tokens": args.prompt_tokens,
            "new_tokens": args.new_tokens,
            "bandwidth_bytes_per_s": bandwidth,
            "roofline": {
                str(c): roofline.tokens_per_s(c, bandwidth, weights, shape.kv_bytes_per_token(), mean_ctx)
                for c in sorted(
                    set(conc) | set(_ints(f"{args.inprocess_batches or ''},{args.probe_batches or ''}"))
                )
            },
            "env": env,
        }
        if variant in inproc_variants:
            print(f"{name} [{variant}] in-process", flush=True)
            t0 = time.perf_counter()
            gen = llm_engine.from_loaded(lm)
            run["warm_up"] = gen.warm_up(runners.config.LLM_WARM_CONTEXT, runners.config.LLM_COMPILE_CACHE)
            run["capture_s"] = time.perf_counter() - t0
            print(f"  engine warm in {run['capture_s']:.1f} s: {run['warm_up']}", flush=True)
            batches = _ints(args.inprocess_batches or args.concurrency)
            if variant not in args.variants.split(",") and args.probe_batches:
                batches = _ints(args.probe_batches)
            run["inprocess"] = inproc.measure(gen, prompt, args.new_tokens, batches, args.reps)
            gen.close()
            del gen
        del lm
        _free(args.device)
        if variant in args.variants.split(",") and not args.no_serve:
            print(f"{name} [{variant}] served", flush=True)
            body = request(prompt, args.new_tokens).model_dump()
            log = Path(args.out) / f"serve-{name}-{variant}.log"
            cwd = Path(args.old_tree) if variant == "old" else None
            with load_server(tag, venv, log, cwd) as server:
                run["ready_s"] = server.ready_s
                print(f"  ready in {server.ready_s:.1f} s", flush=True)
                run["served"] = [
                    load.measure(
                        server.url,
                        body,
                        c,
                        max(args.rounds, 4) if c == 1 else args.rounds,
                        ENDPOINT.get(variant, "generate"),
                    )
                    for c in conc
                ]
        runs.append(run)
        _derive(runs, name)
        print(report.table(run, run["reference_inprocess"]), flush=True)
        report.write(runs, {"args": vars(args), "env": env}, Path(args.out))  # keep what finished


def _derive(runs: list[dict], shape: str) -> None:
    """Served variants without their own in-process run compare with the shape's first one."""
    mine = [r for r in runs if r["shape"] == shape]
    reference = next((r["inprocess"] for r in mine if "inprocess" in r), None)
    for run in mine:
        run["reference_inprocess"] = None if "inprocess" in run else reference
        report.derive(run, run["reference_inprocess"])


def load_server(tag: str, env: dict[str, str], log: Path, cwd: Path | None = None):
    from bench.gpu.serve import ROOT, RunnerServer

    return RunnerServer(tag, env, log, cwd or ROOT)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = _base(args.base)
    env = _env_info(args.device)
    bandwidth = roofline.copy_bandwidth(args.device, gib=1.0 if args.device.startswith("cuda") else 0.05)
    print(f"device {env['gpu']}: copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
    runs: list[dict] = []
    for name in args.shapes.split(","):
        bench_shape(name, args, base, bandwidth, env, runs)
    report.plots(runs, out)
    print("\n" + "\n\n".join(report.table(r, r.get("reference_inprocess")) for r in runs))
    print(f"\nwrote {out}/gpu_bench.json and PNG plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
