"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with its status codes.

Every failure leaves as one of these: validation (400, naming the field), unknown model (404),
rate limit (429), a provider or runner down (502/503, naming which), anything else a terse 500 with
no stack trace and nothing from configuration (secrets live there).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import openai
from bentoml.exceptions import BentoMLException
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openai_protocol import ErrorResponse
from api.protocol import RETRY_AFTER_S
from providers import UnknownModel
from runners.client import GenerationRejected, RunnerBusy

log = logging.getLogger("askdb.openai")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return ErrorResponse.body(message, kind, param, code)


def respond(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict"}


def _param(loc: tuple[Any, ...]) -> str | None:
    # pydantic names union branches in the path ("constrained-str", "list[...]"): not fields a user sent
    parts = [p for p in loc[1:] if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS)]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or None


def _most_telling(errs: list[dict]) -> dict:
    """Of a union's failed branches, the one that is about the value, not about its type."""
    first = errs[0]
    param = _param(tuple(first.get("loc", ())))
    same = [e for e in errs if _param(tuple(e.get("loc", ()))) == param]
    return next((e for e in same if not str(e.get("type", "")).endswith("_type")), first)


def _validation(exc: RequestValidationError) -> JSONResponse:
    first = _most_telling(list(exc.errors()))
    param, msg = _param(tuple(first.get("loc", ()))), str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if param is None and ":" in msg:  # model-level checks say "field: why"
        param = msg.split(":", 1)[0]
    if first.get("type") == "json_invalid":
        return respond(400, "request body is not valid JSON", None, "invalid_json")
    if first.get("type") == "missing":
        return respond(400, f"{param} is required", param, "missing_required_parameter")
    return respond(
        400, f"{param}: {msg}" if param and not msg.startswith(param) else msg, param, "invalid_value"
    )


def upstream(exc: Exception, provider: str | None = None) -> JSONResponse:  # provider: the requested model
    """The last provider in the chain failed too: say so, with the status OpenAI clients expect."""
    who = f"model {provider!r}" if provider else "the model provider"
    log.warning("%s failed: %s: %s", who, type(exc).__name__, str(exc)[:200])  # the cause, for operators
    if isinstance(exc, openai.RateLimitError):
        return respond(429, f"{who} is rate-limited and no fallback could answer", code="rate_limit_exceeded")
    if isinstance(exc, openai.APITimeoutError):
        return respond(504, f"{who} timed out and no fallback could answer", code="upstream_timeout")
    if isinstance(exc, openai.APIConnectionError):  # nothing answered at all: the provider is down
        return respond(503, f"{who} is unreachable and no fallback could answer", code="upstream_unavailable")
    if isinstance(exc, openai.APIError):
        return respond(502, f"{who} failed and no fallback could answer", code="upstream_error")
    return respond(503, "the LLM runner is unavailable; retry shortly", code="runner_unavailable")


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation(exc)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, exc: UnknownModel) -> JSONResponse:
        return respond(404, str(exc), "model", "model_not_found")

    @app.exception_handler(GenerationRejected)
    async def _rejected(request: Request, exc: GenerationRejected) -> JSONResponse:
        return respond(400, str(exc), "messages", "context_length_exceeded")

    @app.exception_handler(RunnerBusy)
    async def _busy(request: Request, exc: RunnerBusy) -> JSONResponse:
        headers = {"retry-after": str(RETRY_AFTER_S)}
        return respond(503, f"{exc}; retry shortly", code="engine_overloaded", headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return respond(exc.status_code, str(exc.detail), headers=exc.headers)  # a 405 keeps its Allow

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:  # the runner refused the input
            return respond(int(exc.error_code), str(exc)[:500])
        if isinstance(exc, openai.APIError | ConnectionError | OSError | httpx.HTTPError | BentoMLException):
            return upstream(exc)  # a provider or the runner is down: 502/503, not a 500
        log.error("unexpected %s in %s", type(exc).__name__, request.url.path)  # no message: may hold data
        return respond(500, "internal error; the server log has the details", code="internal_error")
