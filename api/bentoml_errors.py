"""Make BentoML 1.4's error responses and its published OpenAPI document agree (found by tests/test_fuzz.py).

1. A 4xx raised as a BentoMLException (NotFound, InvalidArgument) is sent as `[{"error": ...}]`: the
   handler wraps its dict in a one-element tuple (`_bentoml_impl/server/app.py`, api_endpoint_wrapper).
   The document promises `{"error": ...}`, so the list is unwrapped on the way out.
2. The document says an error's `detail` is a string, but a validation 400 sends pydantic's list of
   errors there (which names each bad field, so it is worth keeping): the document is corrected to
   say string or list; likewise `error`, which askdb's own routes send as an object (API.md).
3. The document declares OpenAPI 3.0.2 but embeds pydantic's JSON Schema 2020-12 keywords, which
   3.0 reads differently or not at all (`exclusiveMinimum: 0` is a boolean flag in 3.0, `const` does
   not exist): they are rewritten in 3.0's terms, so generated clients and validators agree.
4. Starlette's router answers an unknown path (404) or a wrong method (405) in text/plain ("Not
   Found"), unlike every other error: it becomes JSON in the route's shape (OpenAI's under /v1),
   with the status and the `Allow` header kept.
5. BentoML logs every error it catches in a handler at ERROR with a traceback, a client's validation
   400 or NotFound included (`log_exception`, bentoml/_internal/server/http_app.py): a client's
   mistake is rewritten into one WARNING line (method, path, status, the field), so real errors,
   which keep their traceback, stand out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from api.openai_protocol import ErrorResponse
from api.protocol import error_body

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

ERROR_COMPONENTS = ("InvalidArgument", "NotFound", "InternalServerError")
DETAIL_SCHEMA = {
    "title": "Error Detail",
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
}
# askdb's own errors are objects (API.md: {"type", "message", ...}); BentoML's are strings.
ERROR_SCHEMA = {
    "title": "Message",
    "oneOf": [
        {"type": "string"},
        {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
    ],
}
MAX_BUFFER = 1024 * 1024


def fix_error_body(payload: Any) -> Any:
    """`[{"error": ...}]` -> `{"error": ...}`; anything else unchanged."""
    wrapped = isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict)
    return payload[0] if wrapped and "error" in payload[0] else payload


def fix_document(doc: Any) -> Any:
    """BentoML's OpenAPI document with error `detail` typed as sent and 3.1 keywords in 3.0 terms."""
    schemas = doc.get("components", {}).get("schemas", {}) if isinstance(doc, dict) else {}
    for name in ERROR_COMPONENTS:
        props = schemas.get(name, {}).get("properties", {})
        if "detail" in props:
            props["detail"] = dict(DETAIL_SCHEMA)
        if "error" in props:
            props["error"] = dict(ERROR_SCHEMA)
    return _as_openapi30(doc)


def _as_openapi30(node: Any) -> Any:
    if isinstance(node, list):
        return [_as_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _as_openapi30(value) for key, value in node.items()}
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(bound)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[flag], out[bound] = value, True
    if "const" in out and "enum" not in out and not isinstance(out["const"], dict):  # not a field "const"
        out["enum"] = [out.pop("const")]
    return out


def plain_error(status: int, method: str, path: str, allow: str, openai: bool) -> dict:
    """The JSON for a router's text/plain error: what was asked, and what would have worked."""
    shown = path[:200]
    if status == 405:
        kind, message = "method_not_allowed", f"method {method} is not allowed on {shown}; use {allow or '?'}"
    elif status == 404:
        kind, message = "not_found", f"no route {method} {shown}; GET /docs.json lists the routes"
    else:
        kind, message = "http_error", f"{method} {shown} failed with HTTP {status}"
    if openai:
        return ErrorResponse.body(message, "invalid_request_error", code=kind)
    return error_body(kind, message)


class ErrorShapeFixer:
    """An ASGI `send` that rewrites error bodies and /docs.json, as above. `openai`: a /v1 route, whose
    FastAPI app shapes its own JSON errors; only the router's plain-text ones are rewritten there."""

    def __init__(self, send: Send, path: str, method: str = "", openai: bool = False) -> None:
        self._send = send
        self._path, self._method, self._openai = path, method, openai
        self._document = path.rstrip("/") == "/docs.json"
        self._start: Message | None = None
        self._plain = False
        self._body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = message.get("status", 200)
            wanted = status >= 400 or (self._document and status == 200)
            kind = _media_type(message)
            if wanted and kind == b"application/json" and not self._openai:
                self._start = message  # held: the body's length may change
                return
            if status >= 400 and kind == b"text/plain":
                self._start, self._plain = message, True
                return
        elif message["type"] == "http.response.body" and self._start is not None:
            self._body += message.get("body", b"")
            if len(self._body) > MAX_BUFFER:  # too big to be an error we know: passed on as it is
                self._plain = False
                await self._flush(bytes(self._body), more=message.get("more_body", False))
                return
            if not message.get("more_body", False):
                await self._flush(self._rewrite(bytes(self._body)), more=False)
            return
        await self._send(message)

    def _rewrite(self, body: bytes) -> bytes:
        if self._plain:
            assert self._start is not None
            allow = _header(self._start, b"allow")
            status = self._start.get("status", 500)
            return json.dumps(plain_error(status, self._method, self._path, allow, self._openai)).encode()
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return body
        fixed = fix_document(payload) if self._document else fix_error_body(payload)
        return json.dumps(fixed).encode()

    async def _flush(self, body: bytes, *, more: bool) -> None:
        start, self._start = self._start, None
        assert start is not None
        dropped = (b"content-length", b"content-type") if self._plain else (b"content-length",)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in dropped]
        if self._plain:
            headers.append((b"content-type", b"application/json"))
        if not more:
            headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": more})


def _header(start: Message, name: bytes) -> str:
    for key, value in start.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _media_type(start: Message) -> bytes:
    return _header(start, b"content-type").split(";")[0].strip().lower().encode()


HANDLER_LOGGER = "bentoml._internal.server.http_app"  # where log_exception writes


class ClientErrorLogFilter(logging.Filter):
    """Turns log_exception's ERROR + traceback for a client error (status < 500) into one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = _client_status(exc)
        if status is None or exc is None:
            return True  # a real error: logged as BentoML logs it, traceback and all
        args = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
        path, method = args  # log_exception's "Exception on %s [%s]"
        record.msg, record.args = "client error: %s %s -> %d: %s", (method, path, status, _reason(exc))
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def quiet_client_errors() -> None:
    """Install the filter (once per process; service.py does it on import)."""
    logger = logging.getLogger(HANDLER_LOGGER)
    if not any(isinstance(f, ClientErrorLogFilter) for f in logger.filters):
        logger.addFilter(ClientErrorLogFilter())


def _client_status(exc: BaseException | None) -> int | None:
    if isinstance(exc, ValidationError):
        return 400  # BentoML's answer to a request that fails its input model
    if isinstance(exc, BentoMLException) and int(exc.error_code) < 500:
        return int(exc.error_code)
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_input=False, include_url=False)  # no request values in the log
        first = errors[0] if errors else {}
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"{field}: {first.get('msg', 'invalid')}{more}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
