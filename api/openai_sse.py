"""Server-sent events in OpenAI's streaming format: `data: {chunk}` lines, then `data: [DONE]`.

When the client goes away Starlette cancels the response task; the cancellation unwinds these
generators and the ones they read, which closes the runner's stream and frees its batch row. Each
event's running token counts go into the request's TokenLedger (api/usage.py) before the event is
sent, so a key's tokens/min limit is charged for what was generated even when no usage chunk is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from langchain_core.messages import BaseMessage
from pydantic import BaseModel

from api.openai_errors import error_body
from api.openai_protocol import ChatCompletionChunk, ChunkChoice, Delta, Usage
from api.usage import TokenLedger

log = logging.getLogger("askdb.openai")
DONE = "data: [DONE]\n\n"
TOKENS_SO_FAR = "askdb_tokens_so_far"  # providers/local.py's running counts on each chunk


def sse(payload: dict | BaseModel) -> str:
    """One event; a typed chunk leaves out its unset (None) fields, as OpenAI's deltas do."""
    if isinstance(payload, BaseModel):
        return f"data: {payload.model_dump_json(exclude_none=True)}\n\n"
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _record(ledger: TokenLedger | None, piece: BaseMessage) -> None:
    """A chunk's counts so far into the ledger: the final usage, else the local runner's running ones."""
    if ledger is None:
        return
    usage = getattr(piece, "usage_metadata", None)
    if usage:
        ledger.update(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
    elif isinstance(so_far := piece.response_metadata.get(TOKENS_SO_FAR), dict):
        ledger.update(so_far.get("prompt_tokens", 0), so_far.get("completion_tokens", 0))


async def chat_stream(
    first: BaseMessage,
    rest: AsyncGenerator[BaseMessage, None],
    cid: str,
    created: int,
    model: str,
    provider: str,
    include_usage: bool,
    ledger: TokenLedger | None = None,
) -> AsyncIterator[str]:
    base = {"id": cid, "created": created, "model": model, "provider": provider}

    def chunk(delta: Delta, finish: str | None = None) -> str:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
        return sse(ChatCompletionChunk(**base, choices=[choice]))

    _record(ledger, first)  # before the first event leaves: a client may go right after it
    yield chunk(Delta(role="assistant", content=""))
    usage: dict[str, Any] = {}
    finish = "stop"

    async def everything() -> AsyncIterator[BaseMessage]:
        yield first
        async for item in rest:
            yield item

    try:
        async for piece in everything():
            _record(ledger, piece)
            if piece.content:
                yield chunk(Delta(content=str(piece.content)))
            usage = getattr(piece, "usage_metadata", None) or usage
            finish = piece.response_metadata.get("finish_reason") or finish
    except Exception as exc:  # after the 200 is sent an error can only travel as an event
        log.warning("stream from %s failed: %s", provider, type(exc).__name__)
        yield sse(error_body(502, f"provider {provider!r} failed mid-stream", code="upstream_error"))
        return
    finally:
        await rest.aclose()
    yield chunk(Delta(), finish)
    if include_usage:
        counts = Usage.of(usage.get("input_tokens", 0), usage.get("output_tokens", 0))
        yield sse(ChatCompletionChunk(**base, choices=[], usage=counts))
    yield DONE
