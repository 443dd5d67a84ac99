"""The control socket of a running `up`: one JSON request, one JSON reply, per connection."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

Handler = Callable[[dict], dict]


def serve(path: Path, handle: Handler) -> socketserver.UnixStreamServer:
    class _Conn(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                reply = {"ok": True, **handle(json.loads(self.rfile.readline()))}
            except Exception as exc:  # the caller gets the reason, the supervisor keeps running
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")

    path.unlink(missing_ok=True)
    server = socketserver.ThreadingUnixStreamServer(str(path), _Conn)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def request(path: Path, command: dict, timeout: float = 3600.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
