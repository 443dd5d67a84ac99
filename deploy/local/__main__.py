"""CLI: `python -m deploy.local up|upgrade|rollback|status|down` (see deploy/README.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from deploy.local import control
from deploy.local.deployment import DEFAULT_STEPS, Deployment, Settings
from deploy.local.haproxy import POLICIES
from deploy.local.replica import Release

DEFAULT_STATE = Path(".deploy-local")


def _env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env expects KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def _csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__)
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="sockets, config and logs")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start HAProxy + replicas and supervise them (foreground)")
    up.add_argument("--replicas", type=int, default=2)
    up.add_argument("--policy", choices=POLICIES, default="roundrobin")
    up.add_argument("--weights", type=_csv_ints, default=[], help="policy weighted: e.g. 1,2,3")
    up.add_argument("--port", type=int, default=8080, help="HAProxy's port (0: a free one)")
    up.add_argument(
        "--idempotent-path",
        action="append",
        dest="idempotent_paths",
        help="path prefix whose POSTs may be retried on another replica (default: /)",
    )
    up.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        help="seconds a retiring replica may take to finish its open requests and streams "
        "(default: ASKDB_DRAIN_TIMEOUT_S, else 620)",
    )
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds a starting replica may take to answer /readyz (upgrades too)",
    )
    upgrade = sub.add_parser("upgrade", help="roll out a new release with no downtime")
    for cmd, dflt in ((up, "service:AskDB"), (upgrade, None)):
        cmd.add_argument("--version", required=True, help="release label, e.g. v2")
        cmd.add_argument(
            "--target",
            default=dflt,
            help="`bentoml serve` target or Bento tag"
            + ("" if dflt else " (default: the current release's)"),
        )
        cmd.add_argument(
            "--env",
            action="append",
            default=[],
            help="KEY=VALUE for the replicas" + ("" if dflt else ", over the current release's"),
        )
        cmd.add_argument("--cwd", default="." if dflt else None, help="working directory of the replicas")
    for cmd in (sub.choices["upgrade"], sub.add_parser("rollback", help="roll back to the previous release")):
        cmd.add_argument(
            "--steps",
            type=_csv_ints,
            default=[round(f * 100) for f in DEFAULT_STEPS],
            help="traffic percentages for the new release, in order",
        )
        cmd.add_argument("--dwell", type=float, default=5.0, help="seconds at each step")
    status = sub.add_parser("status", help="replicas, versions, weights, HAProxy health")
    status.add_argument("--json", action="store_true")
    sub.add_parser("down", help="drain and stop everything")
    return p


def run_up(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    release = Release(args.version, args.target, _env(args.env), str(Path(args.cwd).resolve()))
    settings = Settings(
        replicas=args.replicas,
        policy=args.policy,
        weights=args.weights,
        port=args.port,
        idempotent_paths=args.idempotent_paths or ["/"],
        ready_timeout_s=args.ready_timeout,
    )
    if args.drain_timeout is not None:
        settings.drain_timeout_s = args.drain_timeout
    deployment = Deployment(release, settings, args.state_dir.resolve())
    done = threading.Event()

    def handle(cmd: dict) -> dict:
        action = cmd.get("action")
        steps = tuple(s / 100 for s in cmd.get("steps", [10, 50, 100]))
        if action == "status":
            return deployment.status()
        if action == "upgrade":
            cur, given = deployment.current, cmd["release"]
            rel = Release(
                given["version"],
                given.get("target") or cur.target,
                {**cur.env, **given.get("env", {})},
                given.get("cwd") or cur.cwd,
            )
            return deployment.upgrade(rel, steps=steps, dwell_s=cmd.get("dwell", 5.0))
        if action == "rollback":
            return deployment.rollback(steps=steps, dwell_s=cmd.get("dwell", 5.0))
        if action == "down":
            done.set()
            return {"stopping": True}
        raise ValueError(f"unknown action {action!r}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        deployment.up()
        server = control.serve(args.state_dir.resolve() / "control.sock", handle)
        print(json.dumps({"ready": True, **deployment.status()}), flush=True)
        done.wait()
        server.shutdown()
    finally:
        deployment.down()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        return run_up(args)
    sock = args.state_dir.resolve() / "control.sock"
    cmd: dict = {"action": args.command}
    if args.command == "upgrade":
        cwd = str(Path(args.cwd).resolve()) if args.cwd else None
        cmd["release"] = {"version": args.version, "target": args.target, "env": _env(args.env), "cwd": cwd}
    if args.command in ("upgrade", "rollback"):
        cmd |= {"steps": args.steps, "dwell": args.dwell}
    reply = control.request(sock, cmd)
    if args.command == "status" and not args.json and reply.get("ok"):
        print(f"{reply['url']}  policy={reply['policy']}  version={reply['version']}")
        for r in reply["replicas"]:
            print(
                f"  {r['name']:<12} {r['slot']:<4} :{r['port']:<6} {r['haproxy_status']:<10} "
                f"weight={r['weight']:<4} in_flight={r['in_flight']:<3} restarts={r['restarts']}"
            )
    else:
        print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
