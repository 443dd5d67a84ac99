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

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

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
