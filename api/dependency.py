"""A dependency that is down answers 503 naming it, with Retry-After, instead of BentoML's bare 500.

BentoML replaces the message of any 5xx raised from an API with "An unexpected error has occurred",
so an API returns this response instead of raising.
"""

from __future__ import annotations

import aiohttp
from bentoml.exceptions import ServiceUnavailable
from starlette.responses import JSONResponse

# How a call to a runner fails while its process is dead or restarting: the connection is refused
# or dropped (aiohttp, which BentoML's client uses), or the runner answers 503 while starting.
RUNNER_DOWN: tuple[type[BaseException], ...] = (aiohttp.ClientError, ConnectionError, ServiceUnavailable)
RETRY_AFTER_S = 5


def unavailable(
    dependency: str, err: BaseException | None = None, state: str = "unavailable"
) -> JSONResponse:
    reason = f" ({type(err).__name__})" if err is not None else ""
    message = f"{dependency} is {state}{reason}; retry shortly"
    return JSONResponse(
        {"error": {"type": "unavailable", "message": message}},
        status_code=503,
        headers={"retry-after": str(RETRY_AFTER_S)},
    )
