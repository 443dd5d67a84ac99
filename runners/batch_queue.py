"""The embedding runner's batch queue: calls wait here and run together, one batch at a time.

Why not BentoML's adaptive batching (`batchable=True`): its dispatcher (bentoml/_internal/marshal/
dispatcher.py, CorkDispatcher) keeps a cancelled call in its queue. `_get_inputs` pops queued jobs
without looking at their futures, so a call whose client left still joins the next batch and is
computed; only `set_result` is skipped for it. Here a call that is cancelled while it waits (its
client disconnected: runners/disconnect.py cancels the handler) leaves the queue at once and is
never encoded. A batch already running cannot be stopped: the encoder's forward pass runs to its
end in a worker thread, and the results of callers that left meanwhile are dropped.

Batching is greedy, as the LLM engine's is: while one batch runs, calls queue; the next batch takes
the queued calls in arrival order up to `max_rows` texts. A call is never split: one larger than
`max_rows` runs alone, in one pass (so `max_rows` 1 means every call alone, batching off). A call that waited
longer than `max_wait_s` before its batch began is refused with a 503, the cap BentoML's
`max_latency_ms` gave.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bentoml.exceptions import ServiceUnavailable

from observability import metrics

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)  # identity: `in`/`remove` on the queue find this very call
class _Call(Generic[T, R]):
    rows: Sequence[T]
    future: asyncio.Future[list[R]]
    queued_at: float = field(default_factory=time.monotonic)
    started: bool = False  # taken into a batch that runs


class BatchQueue(Generic[T, R]):
    def __init__(self, compute: Callable[[list[T]], list[R]], max_rows: int, max_wait_s: float) -> None:
        self.compute = compute
        self.max_rows = max(1, max_rows)
        self.max_wait_s = max_wait_s
        self._queue: collections.deque[_Call[T, R]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return sum(len(c.rows) for c in self._queue)

    async def submit(self, rows: Sequence[T]) -> list[R]:
        """The results for `rows`, in order, once their batch has run."""
        if not rows:
            return []
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.create_task(self._run(), name="embed-batches")
        call: _Call[T, R] = _Call(rows, asyncio.get_running_loop().create_future())
        self._queue.append(call)
        metrics.embed_rows_queued.inc(len(rows))
        assert self._wake is not None
        self._wake.set()
        try:
            return await call.future
        except asyncio.CancelledError:
            if call.started:  # its batch runs on: the result is dropped when it comes
                metrics.embed_cancelled.labels(stage="running").inc()
            else:  # still waiting: leave the queue (unless `_take` already dropped it), never computed
                if call in self._queue:
                    self._queue.remove(call)
                    metrics.embed_rows_queued.dec(len(rows))
                metrics.embed_cancelled.labels(stage="queued").inc()
            raise

    def _take(self) -> list[_Call[T, R]]:
        """The next batch: queued calls in order while their texts fit `max_rows`; calls that waited
        past the cap are refused instead."""
        batch: list[_Call[T, R]] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if batch and rows + len(head.rows) > self.max_rows:
                break
            self._queue.popleft()
            metrics.embed_rows_queued.dec(len(head.rows))
            if head.future.done():  # cancelled, its caller not yet resumed to leave the queue itself
                continue
            if now - head.queued_at > self.max_wait_s:
                metrics.embed_rejected.inc()
                head.future.set_exception(ServiceUnavailable("the embedding runner is overloaded"))
                continue
            head.started = True
            batch.append(head)
            rows += len(head.rows)
        return batch

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            batch = self._take()
            if not self._queue:
                self._wake.clear()
            if not batch:
                continue
            rows = [r for c in batch for r in c.rows]
            metrics.embed_rows_running.inc(len(rows))
            try:
                out = await asyncio.to_thread(self.compute, rows)
            except Exception as err:  # every caller of the batch gets the error (a 500 each)
                for c in batch:
                    if not c.future.done():
                        c.future.set_exception(err)
                continue
            finally:
                metrics.embed_rows_running.dec(len(rows))
            metrics.embed_batch_rows.observe(len(rows))
            metrics.embed_rows.inc(len(rows))
            start = 0
            for c in batch:
                if not c.future.done():  # a caller that left while its batch ran gets nothing
                    c.future.set_result(out[start : start + len(c.rows)])
                start += len(c.rows)
