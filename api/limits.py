"""Bounds on every request field: each rejection names the field and the limit (400)."""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


MAX_PROMPT_CHARS = _int("ASKDB_MAX_PROMPT_CHARS", 32_000)
MAX_NEW_TOKENS = _int("ASKDB_MAX_NEW_TOKENS", 2048)
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_EMBED_TEXTS = _int("ASKDB_MAX_EMBED_TEXTS", 256)
MAX_EMBED_TEXT_CHARS = _int("ASKDB_MAX_EMBED_TEXT_CHARS", 8_000)
# Requests in flight per service process (their body received); past it 429 at once instead of
# queuing (api/access.py). Also each key's default cap (ASKDB_MAX_CONCURRENT_PER_KEY, api/auth.py).
MAX_CONCURRENCY = _int("ASKDB_MAX_CONCURRENCY", 64)
# The API service waits on runners; its own timeout must cover a full LLM batch plus queueing.
REQUEST_TIMEOUT_S = _int("ASKDB_REQUEST_TIMEOUT_S", 600)
# Request line + headers: a client that has not sent them within this time is cut off (408), one
# that sends more is refused (431); enforced in the HTTP protocol, before any route (api/http_protocol.py).
HEADER_TIMEOUT_S = _float("ASKDB_HEADER_TIMEOUT_S", 10.0)
MAX_HEADER_BYTES = _int("ASKDB_MAX_HEADER_BYTES", 16 * 1024)
# Rate-limit buckets in Redis (api/shared_limits.py), so a key's limits hold across workers and
# replicas; unset: per process. FAILURE while Redis is down: open = per-process buckets, closed = 503.
REDIS_URL = os.environ.get("ASKDB_REDIS_URL", "").strip()
REDIS_FAILURE = os.environ.get("ASKDB_REDIS_FAILURE", "open").strip().lower()
# The longest a rate-limit check waits for Redis: a request must not hang on a dead limiter.
REDIS_TIMEOUT_S = _float("ASKDB_REDIS_TIMEOUT_S", 0.25)
