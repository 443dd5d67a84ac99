"""Test wiring for external providers: reserved ports, the provider config of the session server,
and a small REAL HTTP server for faults a healthy askdb never shows (429, 500, slowness).

The session `askdb` is configured (TEST_ENV) with providers on ports reserved here: `remote` is a
second real askdb the provider tests start on REMOTE_PORT, `flaky` is FaultServer on FLAKY_PORT.
Until a test starts them they are down, which only matters to requests routed to them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers import free_port

REMOTE_PORT = free_port()
FLAKY_PORT = free_port()
REMOTE_KEY = "sk-askdb-test-" + "7f3c9a" * 4  # what the remote askdb demands; must never leak
FLAKY_RETRIES = 2

PROVIDERS = {
    "providers": {
        "remote": {
            "base_url": f"http://127.0.0.1:{REMOTE_PORT}/v1",
            "model": "local",
            "api_key_env": "ASKDB_TEST_REMOTE_KEY",
            "timeout": 120,
            "max_retries": 0,
        },
        "flaky": {
            "base_url": f"http://127.0.0.1:{FLAKY_PORT}/v1",
            "model": "gpt-test",
            "timeout": 3,
            "max_retries": FLAKY_RETRIES,
        },
    },
    "routes": {
        "remote-first": {"weights": {"remote": 1}, "fallbacks": ["local"]},
        "flaky-first": {"weights": {"flaky": 1}, "fallbacks": ["local"]},
        "split": {"weights": {"local": 1, "remote": 1}, "fallbacks": ["local"]},
    },
    "default": "local",
}
PROVIDER_ENV = {"ASKDB_PROVIDERS": json.dumps(PROVIDERS), "ASKDB_TEST_REMOTE_KEY": REMOTE_KEY}


class FaultServer:
    """An OpenAI-shaped endpoint that fails on purpose: mode "429", "500" or "slow" (never answers
    within the provider timeout). Counts the requests it got, so a test can see the client's retries."""

    def __init__(self, port: int, mode: str = "429") -> None:
        self.mode, self.hits = mode, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.hits += 1
                if owner.mode == "slow":
                    time.sleep(5)  # longer than the provider's 3 s timeout: the client gives up
                status = 429 if owner.mode == "429" else 500
                body = json.dumps({"error": {"message": f"fault {owner.mode}", "type": "test", "code": None}})
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("retry-after-ms", "20")  # keep the client's backoff short
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
