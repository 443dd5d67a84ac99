"""Calling a runner from another service, safe against BentoML's keep-alive race.

A runner's server (uvicorn) closes an idle keep-alive connection after 5 s; the caller's aiohttp pool
keeps it for 15 s. A request sent on a connection the server has just closed fails in one of several
ways, by where the close meets it: ServerDisconnectedError before the runner saw it, ClientOSError
(connection reset) when the close races the request's bytes, or a bare ClientConnectionError when
the pooled transport or connector is already closing as the request is written ("Connector is
closed." seen here; aiohttp also raises "Failed to send bytes into the underlying connection" and
"Connection lost"). Retrying once on a fresh connection is safe: every runner API only reads.
Seen as rare 503s under light, bursty load (locust), with 32 clients on a CPU-starved runner, and
(the bare kind) as two 503s in a burst of eight /ask calls in a clean-clone test run; with this
retry the next full run logged six retries, all recovered. A runner that is really down refuses
the connection (ClientConnectorError): no retry, and the caller answers 503 at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from runners.schemas import GenRequest, GenResult

T = TypeVar("T")
log = logging.getLogger(__name__)


async def call(method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        return await method(*args, **kwargs)
    except aiohttp.ClientConnectionError as err:
        if isinstance(err, aiohttp.ClientConnectorError):
            raise  # nothing listens: the runner is down, not a stale connection
        log.warning("runner call retried on a fresh connection after %s: %s", type(err).__name__, err)
        return await method(*args, **kwargs)


class GenerationRejected(ValueError):
    """The runner refused this one request (e.g. the prompt does not fit the model's context): 400."""


class RunnerBusy(RuntimeError):
    """Every engine slot is taken and the waiting queue is full: 503, retry shortly."""


def raise_for(code: str | None, error: str | None) -> None:
    """Raise what a failed generation means for its caller (runners.schemas.ErrorCode)."""
    if code == "queue_full":
        raise RunnerBusy(error or "the LLM runner is at capacity")
    if code == "internal":
        raise RuntimeError(error or "generation failed")
    raise GenerationRejected(error or "the LLM runner rejected the request")


_background: set[asyncio.Task[Any]] = set()


def cancel_later(runner: Any, ids: list[str]) -> None:
    """Tell the LLM runner to free these requests' rows (their caller left), without waiting."""

    async def send() -> None:
        try:
            await call(runner.to_async.cancel, ids)
        except Exception as err:  # best effort: the runner also notices the closed connection
            log.info("cancel of %d request(s) not delivered: %s", len(ids), type(err).__name__)

    task = asyncio.ensure_future(send())
    _background.add(task)
    task.add_done_callback(_background.discard)


async def generate(runner: Any, request: GenRequest) -> GenResult:
    """One request through the LLM runner's engine; if the caller is cancelled (its client left),
    the runner is told to drop the row too."""
    try:
        [raw] = await call(runner.to_async.generate, [request])
    except asyncio.CancelledError:
        cancel_later(runner, [request.id])
        raise
    # the in-process handle returns models; an HTTP client may return plain dicts
    return raw if isinstance(raw, GenResult) else GenResult.model_validate(raw)
