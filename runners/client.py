"""Calling a runner from another service, safe against BentoML's keep-alive race.

A runner's server (uvicorn) closes an idle keep-alive connection after 5 s; the caller's aiohttp pool
keeps it for 15 s. A request sent on a connection the server has just closed fails with
ServerDisconnectedError before the runner saw it, or with ClientOSError (connection reset) when the
close races the request's bytes. Retrying once on a fresh connection is safe: every runner API only
reads. Seen as rare 503s under light, bursty load (locust) and, for the reset, with 32 clients on a
CPU-starved runner (batches slower than the keep-alive window, so pooled connections went stale).
A runner that is really down fails the retry too (ClientConnectorError) and the caller answers 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


async def call(method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        return await method(*args, **kwargs)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
        if isinstance(err, aiohttp.ClientConnectorError):
            raise  # nothing listens: the runner is down, not a stale connection
        return await method(*args, **kwargs)
