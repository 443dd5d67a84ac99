"""`bentoml serve runners.llm:LLM` in its own process group, as production starts the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]


class RunnerServer:
    """The LLM runner alone on a free port; `python -m bentoml` so a --target install works too."""

    def __init__(self, model_tag: str, env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.port, self.cwd, self.ready_s = free_port(), cwd, 0.0
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "BENTOML_DO_NOT_TRACK": "true",
            "ASKDB_LLM_MODEL": model_tag,
            **env,
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RunnerServer:
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "runners.llm:LLM",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._fh = self.log.open("wb")
        started = time.perf_counter()
        env = {**self.env, "PYTHONPATH": f"{self.cwd}:{self.env.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=env, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(self.url, self.proc, timeout=900)  # graphs are captured before ready
            self.ready_s = time.perf_counter() - started
        except Exception:
            self.__exit__()
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"runner failed to start:\n{tail}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._fh.close()
