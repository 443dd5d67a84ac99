"""runners/client.call: one retry for a connection that went stale, none for a runner that is down."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest

from runners.client import call


class Flaky:
    """An awaitable runner method failing with `errors` in turn, then answering."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


STALE = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientOSError(104, "Connection reset by peer"),
    aiohttp.ClientConnectionError("Connector is closed."),
    aiohttp.ClientConnectionError("Failed to send bytes into the underlying connection"),
    aiohttp.ClientConnectionError("Connection lost: [Errno 104] Connection reset by peer"),
]


@pytest.mark.parametrize("error", STALE, ids=lambda e: type(e).__name__ + ":" + str(e)[:20])
def test_a_stale_connection_is_retried_once(error: BaseException) -> None:
    method = Flaky(error)
    assert asyncio.run(call(method)) == "ok" and method.calls == 2


def test_a_second_failure_is_the_callers() -> None:
    method = Flaky(aiohttp.ServerDisconnectedError(), aiohttp.ClientConnectionError("Connection lost"))
    with pytest.raises(aiohttp.ClientConnectionError, match="Connection lost"):
        asyncio.run(call(method))
    assert method.calls == 2


def test_a_real_refused_connection_fails_at_once() -> None:
    """A runner that is down: a closed port on loopback, through aiohttp itself. No retry."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        attempts = 0

        async def get() -> int:
            nonlocal attempts
            attempts += 1
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
                return r.status

        with pytest.raises(aiohttp.ClientConnectorError):
            asyncio.run(call(get))
    assert attempts == 1
