"""The ASGI middleware in front of every AskDB route: API key, rate limits, body size, databases.

Registered on the service with `AskDB.add_asgi_middleware(AccessMiddleware)`; BentoML places it
inside its own timeout middleware, so it also guards the mounted OpenAI-compatible app under /v1.
Errors come in the route's shape: OpenAI's `{"error": {"message", "type", "param", "code"}}` under
/v1 (api/openai_protocol.py), askdb's `{"error": {"type", "message"}}` elsewhere (api/protocol.py).

Order, so that a client's slow or refused requests cannot take capacity from others: the key and its
per-minute limits and `max_concurrent` are checked from the headers alone, before the body is read
(each request of a key holds one of its slots from then until its response ends); the service's own
cap (`ASKDB_MAX_CONCURRENCY`, in place of BentoML's `traffic.max_concurrency`, which counted
connections before any key was known) only counts requests whose body has arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import settings
from api import limits, shared_limits
from api.auth import ApiKey, KeyRing, bearer_token
from api.bentoml_errors import ErrorShapeFixer
from api.openai_protocol import ErrorResponse
from api.protocol import error_body
from api.ratelimit import InFlight, RateLimiter
from api.usage import UsageMeter, open_ledger
from runners import tenancy

logger = logging.getLogger("bentoml.askdb.access")  # under bentoml: its log handlers apply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ALWAYS_PUBLIC = frozenset({"/livez", "/readyz", "/healthz"})
UNCAPPED = ALWAYS_PUBLIC | {"/metrics"}  # outside the service's concurrency cap, as BentoML's had them
DB_ROUTES = frozenset({"/ask", "/schema"})  # requests that name a database in their `db` field
DEFAULT_DB = "chinook"  # API.md's default for `db`
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
RETRY_SLOT_S = 1  # a slot frees when any request ends: no better estimate than "soon"


@dataclass
class AccessPolicy:
    keys: KeyRing
    max_body_bytes: int = 4 * 1024 * 1024
    body_timeout_s: float = 30.0
    public_paths: frozenset[str] = ALWAYS_PUBLIC
    max_concurrency: int = limits.MAX_CONCURRENCY  # requests in flight past their body, per process
    # per process, or in Redis across workers and replicas with ASKDB_REDIS_URL (api/shared_limits.py)
    limiter: RateLimiter | shared_limits.SharedLimiter = field(default_factory=RateLimiter)
    in_flight: InFlight = field(default_factory=InFlight)

    @classmethod
    def from_env(cls) -> AccessPolicy:
        s = settings.load()  # once per process (the service's start), read now: tests change it
        public = set(ALWAYS_PUBLIC)
        if not s.auth_metrics:
            public.add("/metrics")  # Prometheus scrapes without a key unless told otherwise
        return cls(
            keys=KeyRing.from_env(),
            max_body_bytes=s.max_body_bytes,
            body_timeout_s=s.body_timeout_s,
            public_paths=frozenset(public),
            limiter=shared_limits.from_settings(s) or RateLimiter(),
        )


class Refusal(Exception):
    def __init__(
        self, status: int, kind: str, message: str, code: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.code = status, kind, message, code
        self.headers = headers or {}


class AccessMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], policy: AccessPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or AccessPolicy.from_env()
        if self.policy.keys.enabled:
            names = ", ".join(k.name for k in self.policy.keys.keys)
            logger.info("API keys required (%d configured: %s)", len(self.policy.keys.keys), names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        openai = scope["path"].startswith("/v1/") or scope["path"] == "/v1"
        # error bodies in the route's shape, and /docs.json in OpenAPI 3.0 terms (api/bentoml_errors.py)
        send = ErrorShapeFixer(send, scope["path"], scope["method"], openai).send
        if scope["path"] in self.policy.public_paths or _preflight(scope):
            await self.app(scope, receive, send)
            return
        try:
            key = self._authenticate(scope)
            scope.setdefault("state", {})["askdb_key"] = key  # the caller, for its data policy (service.py)
            tenancy.enter(tenant_of(key))  # its generations' share of the engine (runners/admission.py)
            if key is not None:
                await self._admit(key)  # from the headers: a refused or slow client reads no body
        except Refusal as refusal:
            await send_refusal(refusal, openai, send)
            return
        try:
            await self._serve(scope, receive, send, key, openai)
        finally:
            if key is not None:
                self.policy.in_flight.leave_key(key.name)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, key: ApiKey | None, openai: bool
    ) -> None:
        try:
            body = await self._read_body_in_time(scope, receive)
            db = _requested_db(scope, body) if key is not None and key.databases is not None else None
            if db is not None and key is not None and not key.may_use(db):
                allowed = ", ".join(sorted(key.databases or ())) or "none"
                raise Refusal(
                    403,
                    "forbidden",
                    f"this API key may not use database '{db}' (allowed: {allowed})",
                    "database_not_allowed",
                )
            slot = self._take_service_slot(scope)
        except Refusal as refusal:
            await send_refusal(refusal, openai, send)
            return
        try:
            await self._call_app(scope, _replay(body, receive), send, key)
        finally:
            if slot:
                self.policy.in_flight.leave()

    async def _call_app(self, scope: Scope, receive: Receive, send: Send, key: ApiKey | None) -> None:
        allowed_dbs = _db_filter(scope, key)
        metered = key is not None and key.tokens_per_minute is not None
        if allowed_dbs is None and not metered:
            await self.app(scope, receive, send)
            return
        meter = UsageMeter(send, databases=allowed_dbs)
        ledger = open_ledger(scope) if metered else None  # streams count here as tokens arrive
        try:
            await self.app(scope, receive, meter.send)
        finally:
            # Also when the client left mid-stream: what was generated for it is spent.
            tokens = max(meter.tokens, ledger.total if ledger is not None else 0)
            if key is not None and metered and tokens:
                await self.policy.limiter.acharge_tokens(key.name, tokens, key.tokens_per_minute)

    def _authenticate(self, scope: Scope) -> ApiKey | None:
        if not self.policy.keys.enabled:
            return None
        token = bearer_token(_header(scope, b"authorization"))
        key = self.policy.keys.authenticate(token)
        if key is None:
            # Log the path and the client, never what was presented.
            client = (scope.get("client") or ("?",))[0]
            logger.warning(
                "refused %s %s from %s: %s API key",
                scope["method"],
                scope["path"],
                client,
                "invalid" if token else "missing",
            )
            message = (
                "invalid API key"
                if token
                else "missing API key: send the header 'Authorization: Bearer YOUR_KEY'"
            )
            raise Refusal(
                401,
                "authentication_error",
                message,
                "invalid_api_key",
                {"www-authenticate": 'Bearer realm="askdb"'},
            )
        return key

    async def _admit(self, key: ApiKey) -> None:
        """One of `key`'s in-flight slots and one request of its per-minute allowance, or a 429."""
        cap = key.max_concurrent or self.policy.max_concurrency
        if not self.policy.in_flight.enter_key(key.name, cap):
            raise Refusal(
                429,
                "rate_limit_exceeded",
                f"too many requests in flight: max_concurrent={cap} for API key '{key.name}'; "
                f"retry after {RETRY_SLOT_S} s",
                "concurrency_limit_exceeded",
                {"retry-after": str(RETRY_SLOT_S)},
            )
        decision = await self.policy.limiter.aadmit(key.name, key.requests_per_minute, key.tokens_per_minute)
        if not decision.allowed:
            self.policy.in_flight.leave_key(key.name)
            if decision.limit == "unavailable":  # ASKDB_REDIS_FAILURE=closed and Redis is down
                raise Refusal(
                    503,
                    "unavailable",
                    "the rate limiter's store (ASKDB_REDIS_URL) is unavailable; retry shortly",
                    "rate_limiter_unavailable",
                    {"retry-after": str(decision.retry_after_s)},
                )
            limit = (
                key.requests_per_minute if decision.limit == "requests_per_minute" else key.tokens_per_minute
            )
            raise Refusal(
                429,
                "rate_limit_exceeded",
                f"rate limit reached: {decision.limit}={limit} for API key '{key.name}'; "
                f"retry after {decision.retry_after_s} s",
                "rate_limit_exceeded",
                {"retry-after": str(decision.retry_after_s)},
            )

    def _take_service_slot(self, scope: Scope) -> bool:
        if scope["path"] in UNCAPPED:
            return False  # monitoring must see a saturated service
        if not self.policy.in_flight.enter(self.policy.max_concurrency):
            raise Refusal(
                429,
                "rate_limit_exceeded",
                f"the service is at its limit of {self.policy.max_concurrency} requests in flight "
                f"(ASKDB_MAX_CONCURRENCY); retry after {RETRY_SLOT_S} s",
                "server_busy",
                {"retry-after": str(RETRY_SLOT_S)},
            )
        return True

    async def _read_body_in_time(self, scope: Scope, receive: Receive) -> bytes | None:
        # A client trickling its body would hold its key's slot and a connection until the request timeout.
        try:
            return await asyncio.wait_for(self._read_body(scope, receive), self.policy.body_timeout_s)
        except TimeoutError:
            raise Refusal(
                408,
                "request_timeout",
                f"request body not received within {self.policy.body_timeout_s:g} s (ASKDB_BODY_TIMEOUT_S)",
                "request_timeout",
            ) from None

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole request body, refused past the limit (before reading when Content-Length says so)."""
        limit = self.policy.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise Refusal(413, "request_too_large", _too_large(limit), "request_too_large")
        if scope["method"] in ("GET", "HEAD", "OPTIONS") and declared is None:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Refusal(413, "request_too_large", _too_large(limit), "request_too_large")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def tenant_of(key: ApiKey | None) -> tenancy.Tenant:
    if key is None:
        return tenancy.Tenant()
    return tenancy.Tenant(name=key.name, weight=key.weight, max_rows=key.max_rows)


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes (ASKDB_MAX_BODY_BYTES)"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _preflight(scope: Scope) -> bool:
    # CORS preflights carry no credentials by design; they reach no API code.
    return scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None


def _requested_db(scope: Scope, body: bytes | None) -> str | None:
    """The database a /ask or /schema request names (API.md's default when it names none)."""
    if scope["path"].rstrip("/") not in DB_ROUTES:
        return None
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        # BentoML would parse forms too; only JSON is checked, so only JSON is let through.
        raise Refusal(
            415,
            "unsupported_media_type",
            "send the request as application/json when using a database-scoped API key",
            "unsupported_media_type",
        )
    try:
        data = json.loads(body or b"{}", object_pairs_hook=_no_duplicate_db)
    except (ValueError, RecursionError):
        return None  # not JSON: BentoML answers 400 itself, and no database is reached
    if not isinstance(data, dict):
        return None
    db = data.get("db", DEFAULT_DB)
    return db if isinstance(db, str) else None


def _no_duplicate_db(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two `db` fields wins; refuse rather than guess.
    if sum(1 for k, _ in pairs if k == "db") > 1:
        raise Refusal(400, "invalid_request_error", "field 'db' given more than once", "duplicate_field")
    return dict(pairs)


def _db_filter(scope: Scope, key: ApiKey | None) -> frozenset[str] | None:
    if key is None or key.databases is None or scope["path"].rstrip("/") != "/databases":
        return None
    return key.databases


def _replay(body: bytes | None, receive: Receive) -> Receive:
    if body is None:
        return receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as the server would

    return replay


async def send_refusal(refusal: Refusal, openai: bool, send: Send) -> None:
    if openai:
        payload = ErrorResponse.body(refusal.message, refusal.kind, code=refusal.code)
    else:
        payload = error_body(refusal.kind, refusal.message)
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in refusal.headers.items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
