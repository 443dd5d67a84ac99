"""Dependencies (the runners, the databases) as HTTP answers: a 503 naming the one that is down.

BentoML replaces the message of any 5xx raised from an API with "An unexpected error has occurred",
so a route returns `unavailable(...)` instead of raising.
"""

from __future__ import annotations

import aiohttp
from bentoml.exceptions import NotFound, ServiceUnavailable
from starlette.responses import JSONResponse

from api.protocol import error_response
from pipeline import databases

# How a call to a runner fails while its process is dead or restarting: the connection is refused
# or dropped (aiohttp, which BentoML's client uses), or the runner answers 503 while starting.
RUNNER_DOWN: tuple[type[BaseException], ...] = (aiohttp.ClientError, ConnectionError, ServiceUnavailable)
LLM_RUNNER = "the LLM runner (askdb-llm)"
EMBEDDING_RUNNER = "the embedding runner (askdb-embedding)"


def unavailable(
    dependency: str, err: BaseException | None = None, state: str = "unavailable"
) -> JSONResponse:
    reason = f" ({type(err).__name__})" if err is not None else ""
    return error_response("unavailable", f"{dependency} is {state}{reason}; retry shortly", 503)


def open_database(name: str) -> databases.Database:
    """The named database, or a 404 that lists the configured names (never their URLs)."""
    try:
        return databases.get(name)
    except databases.UnknownDatabase as err:
        raise NotFound(str(err)) from None
    except databases.ConfigError as err:
        raise ServiceUnavailable(f"database configuration error: {err}") from None
