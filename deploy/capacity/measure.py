"""Measure one LLM runner replica's served throughput on this machine, in bench/gpu's JSON format.

    python -m deploy.capacity.measure --out bench/results/replica_cpu.json [--concurrency 1,4,8,16]

Serves `runners.llm:LLM` alone with real `bentoml serve` (what one askdb-llm pod runs) and loads it
with bench/gpu's closed-loop clients; the JSON feeds `python -m deploy.capacity`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from transformers import AutoTokenizer

from bench.gpu import load
from bench.gpu.workload import prompt_of, request
from deploy.local.deployment import free_port
from deploy.local.replica import BENTOML, is_ready


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--concurrency", default="1,4,8,16")
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--per-client", type=int, default=3)
    args = p.parse_args(argv)

    import bentoml

    from runners import config

    model = bentoml.models.get(config.LLM_MODEL)
    prompt = prompt_of(AutoTokenizer.from_pretrained(model.path), args.prompt_tokens)
    body = request(prompt, args.new_tokens).model_dump()
    port = free_port()
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true"}
    cmd = [BENTOML, "serve", "runners.llm:LLM", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not is_ready(port):
            if proc.poll() is not None:
                raise SystemExit("runner exited before it was ready")
            time.sleep(0.5)  # readiness poll interval
        url = f"http://127.0.0.1:{port}"
        rows = [load.measure(url, body, c, args.per_client) for c in map(int, args.concurrency.split(","))]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    meta = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "model": str(model.tag),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "device": "cpu",
        "note": "shared 2-core CPU; one askdb-llm replica",
    }
    run = {"shape": str(model.tag), "variant": "cpu", "served": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": [run]}, indent=1))
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
