"""How callers consume the engine: an asyncio stream of events, one result, or a blocking batch.

Events made on the engine thread for an asyncio consumer are batched per event loop and handed
over once per iteration (`Engine._publish` calls `deliver`): one wake-up of a server's loop per
step, not one per row.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from runners.schemas import GenRequest, GenResult, StreamEvent
from runners.sequence import Sink, collect

Outbox = dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, StreamEvent]]]


class Consumers:
    """Mixed into the engine, which provides `submit`, `cancel`, its thread and its outbox."""

    _thread: threading.Thread
    _outbox: Outbox

    def submit(self, req: GenRequest, sink: Sink, live: bool = True) -> None:
        raise NotImplementedError

    def cancel(self, ids: list[str]) -> int:
        raise NotImplementedError

    async def stream(self, req: GenRequest, live: bool = True) -> AsyncIterator[StreamEvent]:
        """Events of one request (see `submit`); leaving the iteration early cancels it."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue[StreamEvent]()

        def sink(event: StreamEvent) -> None:
            if threading.current_thread() is self._thread:  # batched: one wake-up per iteration
                self._outbox.setdefault(loop, []).append((queue, event))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, event)

        self.submit(req, sink, live)
        done = False
        try:
            while not done:
                event = await queue.get()
                while not queue.empty() and event.finish_reason is None:
                    event = merged(event, queue.get_nowait())
                done = event.finish_reason is not None
                yield event
        finally:
            if not done:
                self.cancel([req.id])

    async def generate(self, req: GenRequest) -> GenResult:
        return collect([e async for e in self.stream(req, live=False)])

    def run(self, reqs: list[GenRequest], timeout: float | None = None) -> list[GenResult]:
        """Blocking: submit all, wait for all (in-process callers: tests, eval, benchmarks)."""
        events: list[list[StreamEvent]] = [[] for _ in reqs]
        done = threading.Semaphore(0)

        def sink_for(i: int) -> Sink:
            def put(event: StreamEvent) -> None:
                events[i].append(event)
                if event.finish_reason is not None:
                    done.release()

            return put

        for i, req in enumerate(reqs):
            self.submit(req, sink_for(i), live=False)
        for _ in reqs:
            if not done.acquire(timeout=timeout):
                raise TimeoutError("generation did not finish in time")
        return [collect(e) for e in events]


def merged(a: StreamEvent, b: StreamEvent) -> StreamEvent:
    """Two consecutive events of one request as one. A consumer that falls behind (a busy server
    loop under many streams) takes everything queued as one piece: fewer, larger writes exactly
    when writes are the bottleneck, and no change at all when it keeps up."""
    logprobs = (a.logprobs or []) + (b.logprobs or [])
    return b.model_copy(update={"text": a.text + b.text, "logprobs": logprobs or None})


def deliver(items: list[tuple[asyncio.Queue, StreamEvent]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)
