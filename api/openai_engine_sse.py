"""Streams of the engine path (api/openai_local.py): `n` runner streams merged into one event stream.

Each choice's events become chunks with its `index`; its first chunk carries the role, each one the
log-probabilities of the tokens behind its text. With tools offered (and not `none`) a choice's text
is held until it ends, then sent as one `tool_calls` delta per call (finish_reason "tool_calls") or
as one content delta: whether the text was a call is only known at its end. The stream is primed
before the 200 is sent (`prime`), so a rejected request keeps its 400; running token counts go into
the request's TokenLedger as events arrive (api/usage.py), and leaving the stream closes every
runner stream (freeing the rows at the next engine step).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from api.openai_local import GRAMMAR_ERROR, chat_logprobs, chat_message, completion_logprobs, raise_for
from api.openai_protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    Delta,
    ToolCallDelta,
    Usage,
)
from api.openai_sse import DONE, sse
from api.usage import TokenLedger
from providers.local import runner_events
from runners.schemas import GenRequest, TokenLogprob

Event = tuple[int, dict[str, Any]]
__all__ = ["GRAMMAR_ERROR", "chat_chunks", "completion_chunks", "merged", "prime"]


async def merged(runner: Any, jobs: list[GenRequest]) -> AsyncIterator[Event]:
    """(choice index, StreamEvent dict) from every job's runner stream, as they come."""
    queue: asyncio.Queue[tuple[int, dict[str, Any] | Exception]] = asyncio.Queue()
    streams = [runner_events(runner, j) for j in jobs]

    async def pump(i: int, stream: AsyncIterator[dict[str, Any]]) -> None:
        try:
            async for event in stream:
                await queue.put((i, event))
        except Exception as exc:  # travels to the consumer, which raises it
            await queue.put((i, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(jobs)
        while left:
            i, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            left -= item.get("finish_reason") is not None
            yield i, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            with contextlib.suppress(RuntimeError):
                await stream.aclose()  # type: ignore[attr-defined]


async def prime(events: AsyncIterator[Event], grammar: Any) -> tuple[list[Event], AsyncIterator[Event]]:
    """The first event, checked, before anything is sent: a rejected request raises its 4xx here."""
    first = await anext(events)
    if first[1].get("finish_reason") == "error":
        raise_for(first[1].get("code"), first[1].get("error"), grammar)
    return [first], events


async def _all(head: list[Event], rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    for item in head:
        yield item
    async for item in rest:
        yield item


@dataclass
class _Counts:
    prompt: int = 0
    completion: dict[int, int] = field(default_factory=dict)

    def update(self, i: int, event: dict[str, Any], ledger: TokenLedger | None) -> None:
        self.prompt = max(self.prompt, event.get("prompt_tokens", 0))
        self.completion[i] = max(self.completion.get(i, 0), event.get("completion_tokens", 0))
        if ledger is not None:
            ledger.update(self.prompt, sum(self.completion.values()))

    def usage(self) -> Usage:
        return Usage.of(self.prompt, sum(self.completion.values()))


def _logprobs(event: dict[str, Any]) -> list[TokenLogprob] | None:
    raw = event.get("logprobs")
    return [TokenLogprob.model_validate(t) for t in raw] if raw else None


async def chat_chunks(
    body: ChatCompletionRequest,
    head: list[Event],
    rest: AsyncIterator[Event],
    base: dict[str, Any],
    ledger: TokenLedger | None,
    grammar: Any,
) -> AsyncIterator[str]:
    def chunk(i: int, delta: Delta, finish: str | None = None, lps: Any = None) -> str:
        choice = ChunkChoice(index=i, delta=delta, finish_reason=finish, logprobs=lps)  # type: ignore[arg-type]
        return sse(ChatCompletionChunk(**base, choices=[choice]))

    counts, started, held = _Counts(), set(), {}
    hold = body.calls_tools()
    async for i, event in _all(head, rest):
        counts.update(i, event, ledger)
        reason = event.get("finish_reason")
        if reason == "error":
            raise_for(event.get("code"), event.get("error"), grammar)
        if i not in started:
            started.add(i)
            yield chunk(i, Delta(role="assistant", content=""))
        text, lps = event.get("text", ""), chat_logprobs(_logprobs(event))
        if hold:
            held[i] = held.get(i, "") + text
        elif text or lps:
            yield chunk(i, Delta(content=text), lps=lps)
        if reason is None:
            continue
        if hold:
            message, reason = chat_message(body, held.pop(i, ""), reason)
            calls = [
                ToolCallDelta(index=k, id=c.id, type="function", function=c.function)
                for k, c in enumerate(message.tool_calls or [])
            ]
            yield chunk(i, Delta(content=message.content, tool_calls=calls or None), lps=lps)
        yield chunk(i, Delta(), reason)
    if body.include_usage():
        yield sse(ChatCompletionChunk(**base, choices=[], usage=counts.usage()))
    yield DONE


async def completion_chunks(
    head: list[Event],
    rest: AsyncIterator[Event],
    base: dict[str, Any],
    include_usage: bool,
    ledger: TokenLedger | None,
    grammar: Any,
) -> AsyncIterator[str]:
    counts, offsets = _Counts(), {}
    async for i, event in _all(head, rest):
        counts.update(i, event, ledger)
        reason = event.get("finish_reason")
        if reason == "error":
            raise_for(event.get("code"), event.get("error"), grammar)
        text = event.get("text", "")
        lps = completion_logprobs(_logprobs(event), offsets.get(i, 0))
        offsets[i] = offsets.get(i, 0) + sum(len(t) for t in (lps.tokens if lps else []))
        choice = CompletionChoice(index=i, text=text, finish_reason=reason, logprobs=lps)
        yield sse(Completion(**base, choices=[choice]))
    if include_usage:
        yield sse(Completion(**base, choices=[], usage=counts.usage()))
    yield DONE
