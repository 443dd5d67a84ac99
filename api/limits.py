"""Bounds on every request field: each rejection names the field and the limit (400)."""

from __future__ import annotations

import settings

S = settings.get()
MAX_PROMPT_CHARS = S.max_prompt_chars
MAX_NEW_TOKENS = S.max_new_tokens
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_EMBED_TEXTS = S.max_embed_texts
MAX_EMBED_TEXT_CHARS = S.max_embed_text_chars
# Requests in flight per service process (their body received); past it 429 at once instead of
# queuing (api/access.py). Also each key's default cap (ASKDB_MAX_CONCURRENT_PER_KEY, api/auth.py).
MAX_CONCURRENCY = S.max_concurrency
# The API service waits on runners; its own timeout must cover a full LLM batch plus queueing.
REQUEST_TIMEOUT_S = S.request_timeout_s
# Request line + headers: a client that has not sent them within this time is cut off (408), one
# that sends more is refused (431); enforced in the HTTP protocol, before any route (api/http_protocol.py).
HEADER_TIMEOUT_S = S.header_timeout_s
MAX_HEADER_BYTES = S.max_header_bytes
