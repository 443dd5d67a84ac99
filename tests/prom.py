"""A real Prometheus (Debian's /usr/bin/prometheus) on a free port, for tests of the shipped config."""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import ROOT, free_port

MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def scrape_config(target: str, interval: str = "3s") -> dict[str, Any]:
    """The shipped prometheus.yml, pointed at `target` (host:port) and scraping every `interval`."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(MONITORING / f) for f in config["rule_files"]]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "askdb"]
    job["scrape_timeout"] = interval
    for static in job["static_configs"]:
        static["targets"] = [target]
    return config


class Prometheus:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config, self.port = config, free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="askdb-prom-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Prometheus:
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.wait(lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, 60, "ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if check():
                    return
            time.sleep(0.5)  # poll interval
        raise TimeoutError(f"prometheus not {what} after {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join((self.dir / "prometheus.log").read_text(errors="replace").splitlines()[-20:])

    def targets(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]

    def query(self, expr: str) -> dict[str, Any]:
        """The raw API answer of an instant query (status, data or error)."""
        return httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()

    def values(self, expr: str) -> list[float]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        return [float(r["value"][1]) for r in answer["data"]["result"]]

    def positive(self, expr: str) -> bool:
        """True once `expr` has a finite value above zero."""
        return any(v > 0 and math.isfinite(v) for v in self.values(expr))
