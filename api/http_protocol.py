"""Limits on the request head (request line + headers), enforced before any ASGI code runs.

BentoML 1.4 starts uvicorn itself (`_bentoml_impl/worker/service.py`) with no way to pass options,
and uvicorn has no header timeout: its keep-alive timer is cancelled by the first byte, so a client
trickling header bytes held a connection for ever, and h11 parses a head of any size that arrives
whole. `install()` (called when service.py is imported, before BentoML builds uvicorn's Config) makes
uvicorn's "auto" HTTP protocol this h11 subclass (in every worker that imports it, the runners' too), which
- closes a connection whose head is not complete `ASKDB_HEADER_TIMEOUT_S` after the connection
  opened (408 when part of a request came, silently when none did) or, on a kept-alive connection,
  after the next head's first byte (until then uvicorn's keep-alive timeout closes an idle one);
- answers 431 and closes once the head passes `ASKDB_MAX_HEADER_BYTES`;
- answers 400 and closes for a request with both Content-Length and Transfer-Encoding (RFC 9112
  6.1: a server MUST close after such a request; h11 lets Transfer-Encoding win silently).
It is h11 even where httptools is installed, so the limits hold in every environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import h11
import uvicorn.config
from uvicorn.protocols.http.h11_impl import H11Protocol

from api import limits
from api.access import Receive, Refusal, Scope, Send, send_refusal
from api.protocol import error_body

logger = logging.getLogger("bentoml.askdb.http")  # under bentoml: its log handlers apply
HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a head (it accepts bare \n line endings too)
DRAIN_S = 2.0  # after a refusal, how long the rest of the request is read before the close


def _raw_response(status: int, reason: str, kind: str, message: str) -> bytes:
    body = json.dumps(error_body(kind, message)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a time and a size limit on each request head."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = RefuseAmbiguousFraming(self.app)
        # h11's own buffer limit (16 KiB by default) follows ours: it still covers pipelined heads
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.MAX_HEADER_BYTES + 1024)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # bytes of the current head received so far
        self._tail = b""  # the last bytes seen, in case the blank line is split across reads
        self._draining = False  # refused: reading only to let the response reach the client

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return  # refused already: the rest of the request is read and dropped
        if self.conn.their_state is not h11.IDLE:  # a body, or pipelined bytes: not a head
            super().data_received(data)
            return
        if self._head_timer is None:
            self._arm()  # a kept-alive connection's next head: the clock starts at its first byte
        seen = self._tail + data
        end = HEAD_END.search(seen)
        size = self._head_bytes + (end.end() - len(self._tail) if end else len(data))
        if size > limits.MAX_HEADER_BYTES:
            self._close_with(
                431,
                "Request Header Fields Too Large",
                "request_header_fields_too_large",
                f"request line and headers exceed {limits.MAX_HEADER_BYTES} bytes (ASKDB_MAX_HEADER_BYTES)",
            )
            return
        self._head_bytes, self._tail = size, seen[-2:]
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete: the request is h11's now
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes, self._tail = 0, b""
        self._head_timer = self.loop.call_later(limits.HEADER_TIMEOUT_S, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a response is still being sent (pipelining): not an idle head
        if not self._head_bytes:
            self.transport.close()  # nothing asked: an idle connection, closed like a keep-alive one
            return
        self._close_with(
            408,
            "Request Timeout",
            "request_timeout",
            f"request headers not received within {limits.HEADER_TIMEOUT_S:g} s (ASKDB_HEADER_TIMEOUT_S)",
        )

    def _close_with(self, status: int, reason: str, kind: str, message: str) -> None:
        client = self.client[0] if self.client else "?"
        logger.warning("closed a connection from %s: %d %s", client, status, message)
        self._disarm()
        self.transport.write(_raw_response(status, reason, kind, message))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # A close with unread bytes in the socket resets it and the client may lose the response:
        # send FIN after it, drop what still comes, close when the client does (asyncio closes on EOF)
        # or after a moment.
        self.transport.write_eof()
        self._draining = True
        self.loop.call_later(DRAIN_S, self.transport.close)


class RefuseAmbiguousFraming:
    """ASGI: 400 and close for a request carrying both Content-Length and Transfer-Encoding, whose
    body a proxy in front may have framed differently (request smuggling)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        names = {k.lower() for k, _ in scope.get("headers", ())} if scope["type"] == "http" else set()
        if b"content-length" in names and b"transfer-encoding" in names:
            refusal = Refusal(
                400,
                "invalid_request_error",
                "a request may not carry both Content-Length and Transfer-Encoding (RFC 9112 6.1)",
                "ambiguous_framing",
                {"connection": "close"},
            )
            path = scope.get("path", "")
            await send_refusal(refusal, path == "/v1" or path.startswith("/v1/"), send)
            return
        await self.app(scope, receive, send)


def install() -> None:
    """Make uvicorn's default ("auto") HTTP protocol the limited one, in this process."""
    uvicorn.config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedH11Protocol"
