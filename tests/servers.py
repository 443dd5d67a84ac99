"""Start real servers for tests: `bentoml serve` processes on free ports, polled until ready."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from deploy.local.replica import own_home

ROOT = Path(__file__).resolve().parent.parent
BENTOML = [sys.executable, "-m", "bentoml"]  # this interpreter's BentoML, wherever its scripts are


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 300.0) -> None:
    """Poll GET {url}/readyz until 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.5)  # poll interval, not a guess at readiness
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


def private_home(port: int, shared: str | None) -> Path:
    """A BENTOML_HOME of this server's own, sharing the model and bento stores (tests run several
    servers at once; deploy/local/replica.py says why)."""
    return own_home(Path(os.environ.get("TMPDIR", "/tmp")) / f"askdb-bentoml-home-{port}", shared)


class BentoServer:
    """`bentoml serve TARGET` in its own process group, with env overrides and a log file."""

    def __init__(
        self,
        target: str = "service:AskDB",
        *,
        port: int | None = None,
        env: dict | None = None,
        log: Path | None = None,
        cwd: Path = ROOT,
        args: list[str] | None = None,
    ) -> None:
        self.target, self.port, self.cwd = target, port or free_port(), cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if "BENTOML_HOME" not in (env or {}):
            self.env["BENTOML_HOME"] = str(private_home(self.port, self.env.get("BENTOML_HOME")))
        self.log_path = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"askdb-serve-{self.port}.log"
        self.args = args or []
        self.proc: subprocess.Popen | None = None
        self._known: list[psutil.Process] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> BentoServer:
        cmd = [*BENTOML, "serve", self.target, "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._known: list[psutil.Process] = []
        try:
            wait_ready(self.url, self.proc, timeout)
            self._known = self.tree()
        except Exception:
            self.stop()
            raise RuntimeError(f"{self.target} failed to start; log tail:\n{self.log_tail()}") from None
        return self

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def tree(self) -> list[psutil.Process]:
        """The arbiter and every worker: BentoML starts workers in sessions of their own, so a
        process-group signal does not reach them."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        procs = {p.pid: p for p in [*self._known, *self.tree()]}.values()
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
        # workers orphaned by a killed arbiter would keep CPU and memory for the rest of the run
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> BentoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(target: str = "service:AskDB", **kwargs) -> Iterator[BentoServer]:
    server = BentoServer(target, **kwargs)
    with server:
        yield server
