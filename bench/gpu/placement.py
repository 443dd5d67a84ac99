"""Dry run of GPU placement: which GPU each runner worker of `bentoml serve service:AskDB` would use.

`python -m bench.gpu.placement --gpus 2` asks BentoML's own allocator (the one `bentoml serve` runs)
for each service's worker count and CUDA_VISIBLE_DEVICES, as if the machine had that many GPUs, then
applies runners/device.py's per-worker choice. Set the askdb environment as you would for serving,
e.g. ASKDB_EMBED_GPUS=1 ASKDB_LLM_GPUS=1 for "LLM on one GPU, embedding on the next".
With CUDA_VISIBLE_DEVICES already set, BentoML allocates nothing and every worker sees that list.
"""

from __future__ import annotations

import argparse
import os

import settings
from runners import device as device_mod


def plan(gpus: int) -> list[dict[str, object]]:
    from _bentoml_impl.server.allocator import ResourceAllocator
    from bentoml._internal.resource import system_resources

    import service

    service.AskDB.inject_config()  # what `bentoml serve` does before it allocates
    allocator = ResourceAllocator()
    if not ResourceAllocator.gpu_allocation_disabled():
        allocator.system_resources = {**system_resources(), "nvidia.com/gpu": list(range(gpus))}
        allocator.remaining_gpus = gpus
        allocator._available_gpus = [(1.0, 1.0)] * gpus
    user_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    rows = []
    # `bentoml serve` asks for the entry service first, then each dependency in this order
    for name, svc in service.AskDB.all_services().items():
        workers, env = allocator.get_worker_env(svc)
        visible = env.get("CUDA_VISIBLE_DEVICES", user_visible)
        # no CUDA_VISIBLE_DEVICES for a worker: it sees every GPU of the machine
        ids = [v for v in visible.split(",") if v] if visible is not None else [str(i) for i in range(gpus)]
        role = {"askdb-llm": "llm", "askdb-embedding": "embed"}.get(name)
        wanted = device_mod.wanted_device(settings.get(), role) if role else "auto"
        for index in range(1, workers + 1):
            if not role:
                device = "no model"
            elif wanted != "auto":
                device = wanted
            elif ids:
                device = f"cuda:{(index - 1) % len(ids)} = physical GPU {ids[(index - 1) % len(ids)]}"
            else:
                device = "cpu"
            rows.append({"service": name, "worker": index, "CUDA_VISIBLE_DEVICES": visible, "device": device})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu.placement", description=__doc__)
    p.add_argument("--gpus", type=int, help="GPUs to plan for (default: what this machine has)")
    args = p.parse_args(argv)
    from runners import device

    gpus = args.gpus if args.gpus is not None else device.gpu_count()
    if args.gpus is not None:
        # runners.config sizes itself from the GPUs it sees; a dry run on a smaller machine says how many
        embed = settings.load().embed_gpus
        os.environ.setdefault("ASKDB_LLM_GPUS", str(max(1, gpus - embed)))
        os.environ.setdefault("ASKDB_LLM_WORKERS", os.environ["ASKDB_LLM_GPUS"] if gpus else "1")
    print(f"placement for {gpus} GPU(s); CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}")
    for row in plan(gpus):
        print(
            f"  {row['service']:<16} worker {row['worker']}: "
            f"CUDA_VISIBLE_DEVICES={row['CUDA_VISIBLE_DEVICES']} -> {row['device']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
