"""Watching responses on their way out: tokens used (for tokens/min limits) and database lists.

Token counts are read from the response's `usage` object (API.md: /generate, /ask and the OpenAI
routes all report one), in JSON bodies and in `data:` lines of event streams (the OpenAI stream's
final chunk carries `usage` when the client asks for it). Nothing is buffered past what is needed.
A stream without that chunk, or one its client left, is metered by its TokenLedger instead: the
middleware puts one in the request's ASGI scope (`scope["state"]`, what `request.state` reads), the
stream generators (api/openai_sse.py) update it from the runner's running counts as events arrive.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

MAX_JSON_BYTES = 8 * 1024 * 1024  # past this a JSON body is passed on without being read


LEDGER = "askdb_token_ledger"  # its key in scope["state"]


@dataclass
class TokenLedger:
    """Tokens generated for one request so far, from cumulative counts (the largest seen wins)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def update(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens = max(self.prompt_tokens, prompt_tokens)
        self.completion_tokens = max(self.completion_tokens, completion_tokens)

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def open_ledger(scope: MutableMapping[str, Any]) -> TokenLedger:
    ledger = TokenLedger()
    scope.setdefault("state", {})[LEDGER] = ledger
    return ledger


def ledger_of(scope: MutableMapping[str, Any]) -> TokenLedger | None:
    """The request's ledger, where the middleware opened one (keys with a tokens/min limit)."""
    state = scope.get("state")
    found = state.get(LEDGER) if isinstance(state, dict) else None
    return found if isinstance(found, TokenLedger) else None


def usage_tokens(payload: object) -> int:
    """Total tokens in a response's `usage` (total_tokens, else prompt + completion)."""
    if not isinstance(payload, dict):
        return 0
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return 0
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return max(total, 0)
    parts = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    return sum(p for p in parts if isinstance(p, int) and not isinstance(p, bool) and p > 0)


class UsageMeter:
    """An ASGI `send` that passes messages on, counting `usage` tokens and filtering /databases."""

    def __init__(self, send: Send, databases: frozenset[str] | None = None) -> None:
        self._send = send
        self._allowed = databases  # set: the response is a /databases list to narrow to these
        self.tokens = 0
        self._kind = ""
        self._start: Message | None = None
        self._buffer = bytearray()
        self._overflow = False
        self._line = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._kind = _content_kind(message)
            if self._allowed is not None and self._kind == "json" and message.get("status") == 200:
                self._start = message  # held until the body is filtered, as its length changes
                return
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if self._kind == "json":
                self._collect(body)
                if not more:
                    self._finish_json()
                if self._start is not None:
                    if not more:
                        await self._send_filtered()
                    return
            elif self._kind == "sse":
                self._scan_stream(body)
        await self._send(message)

    def _collect(self, body: bytes) -> None:
        if self._overflow or len(self._buffer) + len(body) > MAX_JSON_BYTES:
            self._overflow = True
            self._buffer.clear()
            return
        self._buffer += body

    def _finish_json(self) -> None:
        if self._overflow:
            return
        with contextlib.suppress(ValueError, RecursionError):
            self.tokens += usage_tokens(json.loads(self._buffer))

    def _scan_stream(self, body: bytes) -> None:
        data = self._line + body
        lines = data.split(b"\n")
        self._line = lines.pop()[-65536:]  # an unfinished line waits for the next chunk
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:") and b'"usage"' in line:
                with contextlib.suppress(ValueError, RecursionError):
                    self.tokens += usage_tokens(json.loads(line[5:]))

    async def _send_filtered(self) -> None:
        assert self._start is not None
        body = bytes(self._buffer)
        try:
            payload = json.loads(body)
            listed = payload["databases"]
            payload["databases"] = [
                d for d in listed if isinstance(d, dict) and d.get("name") in (self._allowed or ())
            ]
            body = json.dumps(payload).encode()
        except (ValueError, KeyError, TypeError):
            pass  # not the expected shape: pass it on unchanged
        headers = [(k, v) for k, v in self._start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**self._start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


def _content_kind(start: Message) -> str:
    for key, value in start.get("headers", []):
        if key.lower() == b"content-type":
            media = value.split(b";")[0].strip().lower()
            if media == b"application/json":
                return "json"
            if media == b"text/event-stream":
                return "sse"
    return ""
