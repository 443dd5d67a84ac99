"""One replica: a `bentoml serve` process group on a loopback port, for one release."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENTOML = str(Path(sys.executable).with_name("bentoml"))


@dataclass(frozen=True)
class Release:
    """What a replica serves: a version label, a `bentoml serve` target, and its environment."""

    version: str
    target: str = "service:AskDB"
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."


def own_home(home: Path, shared: str | None) -> Path:
    """A BENTOML_HOME of one server's own that shares the model and bento stores of `shared`.

    `bentoml serve` wipes $BENTOML_HOME/prometheus_multiproc_dir when it starts, and serves /metrics
    from every file in it: replicas on one home erase each other's metrics and report each other's
    (seen: a replica's `askdb_ratelimit_redis_up` read 1 while its Redis was down)."""
    store = Path(shared or Path.home() / "bentoml")
    home.mkdir(parents=True, exist_ok=True)
    for name in ("models", "bentos"):
        (store / name).mkdir(parents=True, exist_ok=True)
        link = home / name
        if not link.is_symlink():
            link.symlink_to(store / name, target_is_directory=True)
    return home


def is_ready(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/readyz"
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200
    return False


class Replica:
    def __init__(self, name: str, slot: str, port: int, release: Release, log_dir: Path) -> None:
        self.name, self.slot, self.port, self.release = name, slot, port, release
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.stopping = False  # set before a deliberate stop, so the supervisor leaves it dead
        self.restarts = 0
        # BentoML's workers run in sessions of their own: track them to reap them with the arbiter.
        self._tree: list[psutil.Process] = []

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BENTOML_DO_NOT_TRACK": "true",
            **self.release.env,
            "ASKDB_REPLICA": self.name,
        }
        home = own_home(self.log_path.parent / "homes" / self.name, env.get("BENTOML_HOME"))
        env["BENTOML_HOME"] = str(home)  # its own metrics directory, the shared model store
        cmd = [BENTOML, "serve", self.release.target, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.release.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"replica {self.name} exited before ready; see {self.log_path}")
            if is_ready(self.port):
                return
            time.sleep(0.3)  # readiness poll interval
        raise TimeoutError(f"replica {self.name} not ready after {timeout:.0f}s; see {self.log_path}")

    def processes(self) -> list[psutil.Process]:
        """The arbiter and its workers; remembered, so orphans of a dead arbiter can be reaped."""
        if self.alive():
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.proc.pid)
                self._tree = [root, *root.children(recursive=True)]
        return [p for p in self._tree if p.is_running()]

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes()]

    def signal(self, sig: int) -> None:
        """To the arbiter only: on SIGTERM it stops its workers gracefully."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def reap(self) -> None:
        """SIGKILL whatever is left of this replica (workers outlive a killed arbiter)."""
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(self._tree, timeout=10)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM (BentoML finishes in-flight requests), SIGKILL after the grace period."""
        self.stopping = True
        if self.proc is None:
            return
        self.processes()  # remember the workers before the arbiter goes
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace_s)
        self.reap()
        self.proc.wait()
