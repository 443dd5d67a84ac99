"""A real AskDB with API keys, rate limits and small caps: the server the hardening tests share.

Keys (each at least 16 characters, as api/auth.py requires):
- `full`: every database, no limits (also what the fuzzing run uses);
- `scoped`: only the `chinook` database, not `chinook_copy`;
- `rpm`: 3 requests per minute; `tpm`: 12 tokens per minute;
- `slow`: 3 requests per minute and up to 10 in flight; `conc`: 1 request in flight at most (the
  slow-client tests); `stream`, `leave`: 250 tokens per minute (the streamed-token tests);
- `hashed`: given in a key file by its sha256 only.
Caps: ASKDB_MAX_NEW_TOKENS=4, ASKDB_MAX_EMBED_TEXTS=16 and ASKDB_MAX_EMBED_TEXT_CHARS=1000 (keep
fuzzed generation and embedding cheap: the schema bounds what the fuzzer sends), ASKDB_MAX_CONCURRENCY=2,
ASKDB_BODY_TIMEOUT_S=3, ASKDB_HEADER_TIMEOUT_S=3, ASKDB_MAX_BODY_BYTES=1 MiB, ASKDB_MAX_HEADER_BYTES=16 KiB.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from samples.chinook import default_path
from tests.servers import BentoServer

KEYS = {
    "full": "full-3f6b1c0e9d2a4b8c",
    "scoped": "scoped-7a1d5e2f9c3b6a0d",
    "rpm": "rpm-4c8e2a6f0b1d3e5a",
    "tpm": "tpm-9b3d7f1a5c2e8d4b",
    "hashed": "hashed-2e6a0c4f8b1d5e9c",
    "slow": "slow-6d2b9f4a1c8e3d7b",
    "conc": "conc-1a7e4c9b2f6d0a8e",
    "stream": "stream-8c3f1b7d5a9e2c4f",
    "leave": "leave-5e9a3d1f7b2c8e6a",
}
STREAM_TOKENS_PER_MIN = 250
MAX_BODY_BYTES = 1024 * 1024
BODY_TIMEOUT_S = 3
HEADER_TIMEOUT_S = 3
MAX_HEADER_BYTES = 16 * 1024
MAX_CONCURRENCY = 2
MAX_NEW_TOKENS = 4
MAX_EMBED_TEXTS = 16
MAX_EMBED_TEXT_CHARS = 1000


@dataclass
class Guarded:
    server: BentoServer
    keys: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


def guarded_env(key_file: Path) -> dict[str, str]:
    """The keys, caps and databases above; the audit log and example store beside the key file."""
    inline = [
        {"name": "full", "key": KEYS["full"]},
        {"name": "scoped", "key": KEYS["scoped"], "databases": ["chinook"]},
        {"name": "rpm", "key": KEYS["rpm"], "requests_per_minute": 3},
        {"name": "tpm", "key": KEYS["tpm"], "tokens_per_minute": 12},
        {"name": "slow", "key": KEYS["slow"], "requests_per_minute": 3, "max_concurrent": 10},
        {"name": "conc", "key": KEYS["conc"], "max_concurrent": 1},
        {"name": "stream", "key": KEYS["stream"], "tokens_per_minute": STREAM_TOKENS_PER_MIN},
        {"name": "leave", "key": KEYS["leave"], "tokens_per_minute": STREAM_TOKENS_PER_MIN},
    ]
    sha = hashlib.sha256(KEYS["hashed"].encode()).hexdigest()
    key_file.write_text(f"keys:\n  - name: hashed\n    sha256: {sha}\n")
    return {
        "BENTOML_DO_NOT_TRACK": "true",
        "ASKDB_API_KEYS": json.dumps(inline),
        "ASKDB_API_KEY_FILE": str(key_file),
        "ASKDB_DATABASES": json.dumps({"chinook_copy": f"sqlite:///{default_path()}"}),
        "ASKDB_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS),
        "ASKDB_MAX_EMBED_TEXTS": str(MAX_EMBED_TEXTS),
        "ASKDB_MAX_EMBED_TEXT_CHARS": str(MAX_EMBED_TEXT_CHARS),
        "ASKDB_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        "ASKDB_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "ASKDB_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "ASKDB_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
        "ASKDB_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        # fuzzed /feedback bodies propose examples: keep them (and the audit) out of the checkout
        "ASKDB_EXAMPLE_STORE": str(key_file.parent / "examples"),
        "ASKDB_AUDIT_LOG": str(key_file.parent / "audit" / "audit.jsonl"),
    }


@pytest.fixture(scope="session")
def guarded() -> Iterator[Guarded]:
    with tempfile.TemporaryDirectory(prefix="askdb-keys-") as tmp:
        env = guarded_env(Path(tmp) / "keys.yaml")
        with BentoServer("service:AskDB", env=env) as server:
            yield Guarded(server, dict(KEYS))
