"""The local deployment: HAProxy + N replicas of the current release, a supervisor that restarts
replicas that die, and gradual rollouts between releases (upgrade and rollback).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import settings
from deploy.local.haproxy import HAProxy, ProxyConfig, slot_name
from deploy.local.replica import Release, Replica

log = logging.getLogger("deploy.local")

DEFAULT_STEPS = (0.1, 0.5, 1.0)
MAX_WEIGHT = 256  # HAProxy's per-server weight ceiling


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scaled_weights(base: list[int]) -> list[int]:
    """Per-replica weights scaled to ~100 so a rollout fraction has room (10% of 100 is 10)."""
    scale = max(1, 100 // max(base))
    return [min(MAX_WEIGHT, b * scale) for b in base]


@dataclass
class Settings:
    replicas: int = 2
    policy: str = "roundrobin"
    weights: list[int] = field(default_factory=list)  # static weights (policy "weighted")
    port: int = 0
    ready_timeout_s: float = 300.0
    grace_s: float = 620.0  # after SIGTERM, before SIGKILL: above the 600 s request timeout
    # How long a retiring replica (upgrade, rollback, down) keeps serving its open requests, streams
    # included, after HAProxy stopped sending it new ones; it is stopped once none is left or at the
    # timeout. Above the 600 s request timeout, so the longest allowed generation ends on its own.
    drain_timeout_s: float = field(default_factory=lambda: settings.get().drain_timeout_s)
    idempotent_paths: list[str] = field(default_factory=lambda: ["/"])

    def base_weights(self) -> list[int]:
        if self.policy == "weighted":
            if len(self.weights) != self.replicas:
                raise ValueError("policy 'weighted' needs one weight per replica")
            return list(self.weights)
        return [1] * self.replicas


class Deployment:
    def __init__(self, release: Release, settings: Settings, state_dir: Path) -> None:
        self.settings, self.state_dir = settings, state_dir
        self.current, self.previous = release, None
        self.port = settings.port or free_port()
        self.weights = scaled_weights(settings.base_weights())
        cfg = ProxyConfig(
            port=self.port,
            socket_path=state_dir / "haproxy.sock",
            policy=settings.policy,
            slots=2 * settings.replicas,
            idempotent_paths=settings.idempotent_paths,
        )
        self.proxy = HAProxy(cfg, state_dir)
        self.replicas: list[Replica] = []  # all live replicas, old and new during a rollout
        self.free_slots = [slot_name(i) for i in range(cfg.slots)]
        self.lock = threading.RLock()  # one rollout (or down) at a time
        self.proc_lock = threading.Lock()  # the supervisor's restart vs a deliberate stop
        self.events: list[dict] = []
        self._stop = threading.Event()
        self._serial = 0

    # -- lifecycle -------------------------------------------------------------------------
    def up(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proxy.start()
        group = self._launch(self.current, self.weights)
        self._bring_in(group, self.weights)
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        self._event("up", version=self.current.version, replicas=[r.name for r in group])

    def down(self) -> None:
        self._stop.set()
        with self.lock:
            self._retire(list(self.replicas))
            self.proxy.stop()
        self._event("down")

    # -- supervisor ------------------------------------------------------------------------
    def _supervise(self, interval_s: float = 0.5) -> None:
        while not self._stop.wait(interval_s):
            with self.proc_lock:
                for rep in list(self.replicas):
                    if rep.stopping:
                        continue
                    if rep.alive():
                        rep.processes()  # refresh the remembered worker pids
                        continue
                    code = rep.proc.returncode if rep.proc else None
                    log.warning("replica %s exited (%s); restarting", rep.name, code)
                    rep.reap()  # orphaned workers would still hold the port
                    rep.restarts += 1
                    rep.start()  # same port and slot: HAProxy's check brings it back
                    self._event("restart", replica=rep.name, exit_code=code)

    # -- rollouts ----------------------------------------------------------------------------
    def upgrade(
        self, release: Release, steps: tuple[float, ...] = DEFAULT_STEPS, dwell_s: float = 5.0
    ) -> dict:
        """Start `release` beside the current one, shift traffic in steps, drain and stop the old."""
        with self.lock:
            old = list(self.replicas)
            new = self._launch(release, [0] * len(self.weights))
            try:
                self._bring_in(new, [0] * len(new))
            except Exception:
                self._retire(new)
                raise
            self._event("started", version=release.version, replicas=[r.name for r in new])
            for fraction in steps:
                self._shift(old, new, fraction)
                self._event("shift", fraction=fraction)
                if fraction < 1.0:
                    time.sleep(dwell_s)  # let the step carry real traffic before the next one
            self._retire(old)
            self.previous, self.current = self.current, release
            self._event("upgraded", version=release.version)
            return self.status()

    def rollback(self, **kwargs: object) -> dict:
        if self.previous is None:
            raise RuntimeError("nothing to roll back to")
        return self.upgrade(self.previous, **kwargs)

    def _shift(self, old: list[Replica], new: list[Replica], fraction: float) -> None:
        # Same per-index base weights on both sides, so `fraction` is the share of new requests.
        api = self.proxy.api
        for rep, w in zip(new, self.weights, strict=True):
            api.set_weight(rep.slot, round(w * fraction))
        for rep, w in zip(old, self.weights, strict=True):
            api.set_weight(rep.slot, round(w * (1.0 - fraction)))

    # -- slots -------------------------------------------------------------------------------
    def _launch(self, release: Release, weights: list[int]) -> list[Replica]:
        group = []
        for _ in weights:
            self._serial += 1
            slot = self.free_slots.pop(0)
            rep = Replica(f"{release.version}-r{self._serial}", slot, free_port(), release, self.state_dir)
            rep.start()
            group.append(rep)
        self.replicas += group
        return group

    def _bring_in(self, group: list[Replica], weights: list[int]) -> None:
        """Wait until each replica answers /readyz, then put it in its slot and let HAProxy check it."""
        with ThreadPoolExecutor(len(group)) as pool:
            list(pool.map(lambda r: r.wait_ready(self.settings.ready_timeout_s), group))
        api = self.proxy.api
        for rep, w in zip(group, weights, strict=True):
            api.set_addr(rep.slot, "127.0.0.1", rep.port)
            api.set_weight(rep.slot, w)
            api.set_state(rep.slot, "ready")
        self._wait_checked_up(group)

    def _wait_checked_up(self, group: list[Replica], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.proxy.api.servers()
            if all(stats[r.slot]["status"].startswith("UP") for r in group):
                return
            time.sleep(0.2)  # health-check poll interval
        raise TimeoutError("HAProxy did not mark the new replicas UP")

    def _retire(self, group: list[Replica]) -> None:
        """Drain: no new requests; wait for in-flight ones to finish; then stop the processes."""
        api = self.proxy.api
        with self.proc_lock:
            for rep in group:
                rep.stopping = True
        for rep in group:
            api.set_weight(rep.slot, 0)
            api.set_state(rep.slot, "drain")
        deadline = time.monotonic() + self.settings.drain_timeout_s
        while time.monotonic() < deadline:
            stats = api.servers()
            if all(int(stats[r.slot]["scur"] or 0) == 0 for r in group):
                break
            time.sleep(0.2)  # in-flight poll interval
        else:
            left = {r.name: int(api.servers()[r.slot]["scur"] or 0) for r in group}
            log.warning(
                "drain timeout (%.0f s) with requests still open: %s", self.settings.drain_timeout_s, left
            )
        for rep in group:
            api.set_state(rep.slot, "maint")
        with ThreadPoolExecutor(max(1, len(group))) as pool:
            list(pool.map(lambda r: r.stop(self.settings.grace_s), group))
        for rep in group:
            self.replicas.remove(rep)
            self.free_slots.append(rep.slot)

    # -- reporting ---------------------------------------------------------------------------
    def _event(self, kind: str, **data: object) -> None:
        entry = {"t": round(time.time(), 3), "event": kind, **data}
        self.events.append(entry)
        log.info("%s", entry)

    def status(self) -> dict:
        stats = self.proxy.api.servers()
        return {
            "port": self.port,
            "url": f"http://127.0.0.1:{self.port}",
            "policy": self.settings.policy,
            "version": self.current.version,
            "previous": self.previous.version if self.previous else None,
            "replicas": [
                {
                    "name": r.name,
                    "version": r.release.version,
                    "slot": r.slot,
                    "port": r.port,
                    "pid": r.pid,
                    "pids": r.pids(),
                    "alive": r.alive(),
                    "restarts": r.restarts,
                    "haproxy_status": stats[r.slot]["status"],
                    "weight": int(stats[r.slot]["weight"] or 0),
                    "in_flight": int(stats[r.slot]["scur"] or 0),
                    "served": int(stats[r.slot]["stot"] or 0),
                }
                for r in self.replicas
            ],
            "events": self.events[-50:],
        }
