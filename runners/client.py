"""Calling a runner from another service, safe against BentoML's keep-alive race.

A runner's server (uvicorn) closes an idle keep-alive connection after 5 s; the caller's aiohttp pool
keeps it for 15 s. A request sent on a connection the server has just closed fails with
ServerDisconnectedError before the runner saw it, so retrying it once on a fresh connection is safe
(every runner API only reads). Seen as rare 503s under light, bursty load (locust).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


async def call(method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    try:
        return await method(*args, **kwargs)
    except aiohttp.ServerDisconnectedError:
        return await method(*args, **kwargs)
