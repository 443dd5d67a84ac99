"""Upgrade then rollback of the real service under long /v1 streams, through deploy.local.

    python -m bench.drain [--tokens 160] [--hold 8] [--streams 16] [--drain-timeout 620]
                          [--request-timeout S]

One replica a release (4 LLM runners at once do not fit 2 cores), short /generate requests at
1 req/s alongside. Each rollout holds its new replica at weight 0 for `--hold` s (`--steps 0,100`):
the streams open then, on the old replica, and must still be running when it drains. Prints, per
rollout, streams complete (finish_reason "length" and `data: [DONE]` seen), streams still open
when the drain began, and failed short requests; writes drain.json. tests/test_drain.py asserts the
same on a small service; this is the real-model measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fixtures.local_deploy import LocalDeploy
from tests.fixtures.steady_load import SteadyLoad


def read_chat_stream(url: str, tokens: int) -> dict:
    """One /v1 chat stream read to its end, raw SSE: its finish_reason, whether `data: [DONE]` came
    (the openai client also ends quietly on a stream closed without it), chunks and seconds."""
    out: dict = {"finish_reason": None, "chunks": 0, "done": False, "error": None, "started": time.time()}
    story = [{"role": "user", "content": "Write a long story about a database."}]
    body = {"model": "local", "messages": story, "max_tokens": tokens, "stream": True, "ignore_eos": True}
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=900) as resp:
            if resp.status_code != 200:
                out["error"] = f"HTTP {resp.status_code}: {resp.read()[:200]!r}"
            for line in resp.iter_lines() if resp.status_code == 200 else ():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    out["done"] = True
                    continue
                out["chunks"] += 1
                for choice in json.loads(line[6:]).get("choices", []):
                    out["finish_reason"] = choice.get("finish_reason") or out["finish_reason"]
    except httpx.HTTPError as err:
        out["error"] = repr(err)
    out["ended"] = time.time()  # epoch, like the deployment's events
    return out


def new_replica_up(dep: LocalDeploy, version: str, old: set[str], timeout: float = 1200) -> None:
    """Until a replica of `version` not among `old` is UP in HAProxy (still at weight 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in dep.status()["replicas"]:
            if r["name"] not in old and r["version"] == version and r["haproxy_status"].startswith("UP"):
                return
        time.sleep(0.5)  # status poll interval
    raise TimeoutError(f"no new {version} replica UP within {timeout} s")


def measure(
    tmp_path: Path, streams: int, tokens: int, hold_s: float, drain_timeout_s: float, request_timeout_s: int
) -> dict:
    """Both rollouts with `streams` streams of `tokens` tokens open on the old release."""
    env = {
        "ASKDB_LLM_SLOTS": "20",
        "ASKDB_AUDIT_LOG": "off",
        "ASKDB_EXAMPLE_STORE": str(tmp_path / "ex"),
        # On a few CPU cores a 2-token call waits ~40 s beside the streams, so 1/s keeps ~40 of them
        # open: the default cap of 64 in flight then refuses a stream with 429 (seen).
        "ASKDB_MAX_CONCURRENCY": "256",
    }
    if request_timeout_s:  # a starved CPU needs longer than the 600 s default for a long stream
        env |= {
            "ASKDB_REQUEST_TIMEOUT_S": str(request_timeout_s),
            "ASKDB_LLM_TIMEOUT_S": str(request_timeout_s),
        }
    short = {"prompt": "Hello", "max_new_tokens": 2}
    dep = LocalDeploy(
        tmp_path / "state",
        replicas=1,
        env=env,
        target="service:AskDB",
        drain_timeout_s=drain_timeout_s,
        ready_timeout_s=1200,  # a replica starting beside 16 streams on a few CPU cores is slow
    )
    dep.start()
    results: dict[str, list[dict]] = {}
    retired: dict[str, float] = {}
    try:
        # a short call may wait minutes beside 16 long streams on a small CPU: slow is not failed
        with SteadyLoad(dep.url, 1, path="/generate", body=short, timeout_s=600) as load:
            for phase, version, command in (
                ("upgrade", "v2", ("upgrade", "--version", "v2")),
                ("rollback", "v1", ("rollback",)),
            ):
                old = {r["name"] for r in dep.status()["replicas"]}
                with ThreadPoolExecutor(streams + 1) as pool:
                    rollout = pool.submit(
                        dep.cli, *command, "--steps", "0,100", "--dwell", str(hold_s), timeout=3600
                    )
                    new_replica_up(dep, version, old)
                    futures = [pool.submit(read_chat_stream, dep.url, tokens) for _ in range(streams)]
                    reply = rollout.result()
                    results[phase] = [f.result() for f in futures]
                # the last shift (all traffic to the new release) is when the old replica's drain began
                retired[phase] = [e["t"] for e in reply["events"] if e["event"] == "shift"][-1]
            load.stop()
    finally:
        dep.stop()
    ok = {k: sum(r["done"] and r["finish_reason"] == "length" for r in v) for k, v in results.items()}
    open_at_drain = {k: sum(r["ended"] > retired[k] for r in v) for k, v in results.items()}
    return {
        "streams": streams,
        "tokens": tokens,
        "short_requests": len(load.outcomes),
        "short_failed": len(load.failures()),
        "complete": ok,
        "open_when_drain_began": open_at_drain,
        "failures": [f.error for f in load.failures()[:5]],
        "stream_outcomes": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the new replica waits at weight 0")
    ap.add_argument("--drain-timeout", type=float, default=620.0, help="deploy.local's, seconds")
    ap.add_argument("--request-timeout", type=int, default=0, help="the service's and LLM runner's, s")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="askdb-drain-") as tmp:
        result = measure(
            Path(tmp), args.streams, args.tokens, args.hold, args.drain_timeout, args.request_timeout
        )
    print("| rollout | streams complete | open when the drain began | short requests failed |")
    print("|---|---:|---:|---:|")
    for phase in ("upgrade", "rollback"):
        print(
            f"| {phase} | {result['complete'][phase]}/{args.streams} "
            f"| {result['open_when_drain_began'][phase]} "
            f"| {result['short_failed']}/{result['short_requests']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drain.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
