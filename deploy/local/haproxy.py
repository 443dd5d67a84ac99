"""HAProxy for the replicas: config rendering, the process, and its runtime API (stats socket).

The backend has a fixed number of server slots; a replica takes a free slot (`set server ... addr`)
and leaves it in maintenance when stopped, so upgrades never need a reload.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

POLICIES = ("roundrobin", "weighted", "leastconn")
BACKEND = "replicas"
# Server-side timeout just above the service's own 600 s request timeout (api/limits.py).
SERVER_TIMEOUT_S = 610
# Placeholder address of an empty slot; it is in maintenance, so never checked nor used.
PARKED = "127.0.0.1:9"


@dataclass
class ProxyConfig:
    port: int
    socket_path: Path
    policy: str = "roundrobin"
    slots: int = 6
    # Path prefixes whose POSTs may be replayed on another replica (all askdb calls only read).
    idempotent_paths: list[str] = field(default_factory=lambda: ["/"])
    check_interval_ms: int = 1000
    retries: int = 3

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {self.policy!r}")

    @property
    def algorithm(self) -> str:
        # Weighted round robin is HAProxy's roundrobin with per-server weights.
        return "leastconn" if self.policy == "leastconn" else "roundrobin"


def slot_name(index: int) -> str:
    return f"s{index}"


def render(cfg: ProxyConfig) -> str:
    """The whole haproxy.cfg; every slot starts parked in maintenance."""
    idem = " ".join(cfg.idempotent_paths)
    lines = [
        "global",
        f"    stats socket {cfg.socket_path} mode 600 level admin",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 620s",
        f"    timeout server {SERVER_TIMEOUT_S}s",
        "    timeout queue 60s",
        "    timeout http-request 30s",
        # A failed attempt goes to another replica, not the same one again.
        f"    retries {cfg.retries}",
        "    option redispatch 1",
        "",
        "frontend askdb",
        f"    bind 127.0.0.1:{cfg.port}",
        "    default_backend " + BACKEND,
        "",
        f"backend {BACKEND}",
        f"    balance {cfg.algorithm}",
        # L7 retries replay the request, so it must be buffered whole first.
        "    option http-buffer-request",
        "    retry-on conn-failure empty-response junk-response 502 503 504",
        "    acl idempotent method GET HEAD OPTIONS",
        f"    acl idempotent path_beg {idem}",
        "    http-request disable-l7-retry if !idempotent",
        "    option httpchk GET /readyz",
        # A busy replica may answer its check slowly; a 1 s check timeout (the default: inter) flaps it.
        "    timeout check 3s",
        "    http-check expect status 200",
        f"    default-server check inter {cfg.check_interval_ms}ms fastinter 250ms rise 1 fall 2",
    ]
    lines += [f"    server {slot_name(i)} {PARKED} weight 0 disabled" for i in range(cfg.slots)]
    return "\n".join(lines) + "\n"


class RuntimeAPI:
    """HAProxy's stats socket at admin level: one command per connection."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    def send(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        out = b"".join(chunks).decode()
        # A `set` succeeds silently, or says what changed ("IP changed from ..."); anything else is
        # HAProxy refusing it (no such server, bad weight or state).
        if command.startswith("set ") and out.strip() and "changed" not in out:
            raise RuntimeError(f"haproxy: {command!r} -> {out.strip()}")
        return out

    def set_addr(self, slot: str, host: str, port: int) -> None:
        self.send(f"set server {BACKEND}/{slot} addr {host} port {port}")

    def set_weight(self, slot: str, weight: int) -> None:
        self.send(f"set server {BACKEND}/{slot} weight {weight}")

    def set_state(self, slot: str, state: str) -> None:
        """ready | drain (no new requests, in-flight ones finish) | maint."""
        self.send(f"set server {BACKEND}/{slot} state {state}")

    def servers(self) -> dict[str, dict[str, str]]:
        """`show stat` rows of the backend's servers, by slot name."""
        text = self.send("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == BACKEND and r["svname"] != "BACKEND"}


class HAProxy:
    """The haproxy process in the foreground (-db), in its own session."""

    def __init__(self, cfg: ProxyConfig, workdir: Path) -> None:
        self.cfg, self.workdir = cfg, workdir
        self.config_path = workdir / "haproxy.cfg"
        self.api = RuntimeAPI(cfg.socket_path)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> HAProxy:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render(self.cfg))
        subprocess.run([binary, "-c", "-q", "-f", str(self.config_path)], check=True)
        log = (self.workdir / "haproxy.log").open("ab")
        self.proc = subprocess.Popen(
            [binary, "-db", "-f", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}")
            with contextlib.suppress(OSError):
                self.api.send("show info")
                return self
            time.sleep(0.1)  # socket poll interval
        raise TimeoutError("haproxy stats socket did not come up")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
