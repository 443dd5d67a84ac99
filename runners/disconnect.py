"""An ASGI middleware that cancels a request's handler when its client disconnects.

Starlette runs a plain (non-streaming) handler to its end even when nobody waits for the answer,
and a streaming one until a write fails. For an LLM that is minutes of decoding for nobody. Here
the handler runs in a task of its own; once its body has been read, the connection's next ASGI
message can only be `http.disconnect`, so a watcher waits for it and cancels the handler. The
handler's `finally` blocks then run as usual: an engine stream closes (freeing its row) and a
runner call is cancelled. Responses already complete are left alone.

Registered on the API service (service.py), where it starts every cancellation, and on the
embedding runner (runners/embedding.py), where a cancelled call leaves the batch queue. The LLM
runner does not need it: a cancelled call to it is followed by a `cancel` call naming the request
(runners/client.py), and its streams end when their response is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("bentoml.askdb.disconnect")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DISCONNECT: Message = {"type": "http.disconnect"}


class CancelOnDisconnect:
    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read, gone = asyncio.Event(), asyncio.Event()
        answered = False

        async def app_receive() -> Message:
            if body_read.is_set():  # the watcher owns the connection now
                await gone.wait()
                return DISCONNECT
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        async def watch() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        handler = asyncio.create_task(self.app(scope, app_receive, app_send))
        watcher = asyncio.create_task(watch())
        left = asyncio.create_task(gone.wait())
        try:
            await asyncio.wait({handler, left}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and not answered:
                log.info("%s %s: the client left; cancelling its request", scope.get("method"), scope["path"])
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
                return
            await handler
        finally:
            for task in (handler, watcher, left):
                if not task.done():
                    task.cancel()
