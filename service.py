"""askdb: the one service users talk to. It composes one runner per model (each scales on its own).

Serve with `bentoml serve` (the entry is named in bentofile.yaml) or `bentoml serve service:AskDB`.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Annotated, Any, Literal

import bentoml
from annotated_types import MaxLen, MinLen
from bentoml.exceptions import BentoMLException, InvalidArgument, NotFound, ServiceUnavailable
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from api import http_protocol, limits
from api.access import AccessMiddleware
from api.ask import Asker
from api.auth import ApiKey
from api.bentoml_errors import quiet_client_errors
from api.callers import Callers
from api.dependency import EMBEDDING_RUNNER, LLM_RUNNER, RUNNER_DOWN, open_database, unavailable
from api.openai_app import app as openai_app
from api.protocol import (
    AskResponse,
    DbName,
    EmbedResponse,
    GenerateResponse,
    MaxRows,
    ModelName,
    NewTokens,
    Prompt,
    Question,
    StopList,
    Temperature,
    Texts,
    Usage,
    error_response,
)
from observability import audit
from observability import service_hooks as obs
from observability.ask import quality_log, record_feedback
from pipeline import databases as dbconfig
from pipeline import example_store
from pipeline.chain import AskOptions
from pipeline.enforce import PolicyRefused, policed_api
from pipeline.example_store import MAX_SQL_CHARS, ProposalError
from pipeline.schema import describe
from providers import Models
from runners.client import GenerationRejected, RunnerBusy, raise_for
from runners.disconnect import CancelOnDisconnect
from runners.embedding import Embedding
from runners.llm import LLM
from runners.schemas import GenRequest

# Per-key data policies and admin flags (api/callers.py), read when `bentoml serve` imports this
# module: a filter that does not parse or is not read-only stops it before any worker starts, with a
# message naming the key, database and table (in a worker, BentoML would restart it forever).
CALLERS = Callers.from_env()

ProposedSQL = Annotated[str, MinLen(1), MaxLen(MAX_SQL_CHARS)]
ProposalId = Annotated[str, MinLen(1), MaxLen(64)]
ReviewAction = Literal["list", "approve", "reject"]


class Forbidden(BentoMLException):
    error_code = HTTPStatus.FORBIDDEN


class Conflict(BentoMLException):
    error_code = HTTPStatus.CONFLICT


class TooManyRequests(BentoMLException):
    error_code = HTTPStatus.TOO_MANY_REQUESTS


def caller_key(ctx: bentoml.Context) -> ApiKey | None:
    """The API key the access middleware authenticated for this request (None when auth is off)."""
    return getattr(ctx.request.state, "askdb_key", None)


def with_status(ctx: bentoml.Context, response: Any) -> Any:
    """A returned Response keeps its status: with a `ctx` parameter BentoML sets ctx's status on it."""
    if isinstance(response, Response):
        ctx.response.status_code = response.status_code
    return response


def proposal_error(err: ProposalError) -> BentoMLException:
    kinds = {404: NotFound, 409: Conflict, 429: TooManyRequests}
    return kinds.get(err.status, InvalidArgument)(str(err))


@bentoml.asgi_app(openai_app, path="/v1")  # OpenAI-compatible API (api/openai_app.py)
@bentoml.service(
    name="askdb",
    # no traffic.max_concurrency: its middleware runs outside ours, before any key is known, so slow
    # or refused clients held its slots; api/access.py caps requests per key and per process instead
    traffic={"timeout": limits.REQUEST_TIMEOUT_S},
    labels={"component": "api", "owner": "askdb"},
)
class AskDB:
    llm = bentoml.depends(LLM)
    embedder = bentoml.depends(Embedding)

    def __init__(self) -> None:
        # The one way to the runners (providers/resolver.py): these routes use it as `self.models`,
        # the /v1 app through the current service; it also decides which model answers a request.
        self.models = Models(self.llm, self.embedder)
        self.asker = Asker(self.models)
        self.callers = CALLERS

    async def complete(self, request: GenRequest) -> GenerateResponse:
        """One generation through the LLM runner's batch queue; per-request errors become 400s."""
        # The tag lookup runs alongside, not after: on SIGTERM BentoML stops the runner with this worker,
        # and a stopping runner refuses new calls, so a later one would 503 a request already in flight.
        result, tag = await asyncio.gather(self.models.generate(request), self.models.llm_tag())
        if result.finish_reason == "error":
            try:
                raise_for(result.code, result.error)
            except GenerationRejected as err:
                raise InvalidArgument(str(err)) from None
        usage = Usage.of(result.prompt_tokens, result.completion_tokens)
        return GenerateResponse(text=result.text, finish_reason=result.finish_reason, usage=usage, model=tag)

    @bentoml.api
    async def generate(
        self,
        prompt: Prompt,
        max_new_tokens: NewTokens = min(128, limits.MAX_NEW_TOKENS),  # a default within the cap
        temperature: Temperature = 0.0,
        stop: StopList = Field(default_factory=list),
    ) -> GenerateResponse:
        """Raw completion of `prompt` by the served LLM (no chat template)."""
        try:
            return await self.complete(
                GenRequest(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)
            )
        except RUNNER_DOWN as err:  # the runner process died or is restarting
            return unavailable(LLM_RUNNER, err)
        except RunnerBusy:  # every slot taken and the queue full: come back shortly
            return unavailable(LLM_RUNNER, state="at capacity")

    @bentoml.api
    async def embed(self, texts: Texts) -> EmbedResponse:
        """Normalised sentence embeddings, one per text."""
        try:
            vectors = await self.models.embed(texts)
            info = await self.models.embed_info()
        except RUNNER_DOWN as err:
            return unavailable(EMBEDDING_RUNNER, err)
        return EmbedResponse(embeddings=vectors, model=info.tag, dim=info.dim or len(vectors[0]))

    @bentoml.api
    async def ask(
        self,
        ctx: bentoml.Context,
        question: Question,
        db: DbName = dbconfig.DEFAULT,
        max_rows: MaxRows = 100,
        model: ModelName | None = None,
        answer: bool = True,
        options: AskOptions | None = None,
    ) -> AskResponse:
        """A question in plain language -> SQL, rows and a short answer; 422 when unsafe or unanswerable."""
        key = caller_key(ctx)
        answer_or_error = await self.asker.ask(
            question=question,
            db=db,
            max_rows=max_rows,
            model=model,
            options=options,
            answer=answer,
            policy=self.callers.policy(key, db),
            caller=key.name if key else None,
        )
        return with_status(ctx, answer_or_error)

    @bentoml.api
    def schema(self, ctx: bentoml.Context, db: DbName = dbconfig.DEFAULT) -> dict:
        """Tables, columns (name, type, nullable, primary_key) and foreign keys of a configured database;
        under the caller's data policy, hidden columns are left out and masked ones say `masked`."""
        database = open_database(db)
        try:
            policy = self.callers.policy(caller_key(ctx), db)
            if policy is None:
                return describe(database).to_api()
            try:
                return policed_api(describe(database), policy)
            except PolicyRefused as err:  # the policy names what the database lacks: fail closed
                return with_status(ctx, error_response("refused", str(err), 422))
        except (OSError, SQLAlchemyError) as err:
            # A dependency is down: 503 saying which (a raised 5xx reaches the client without its message).
            reason = database.error_message(err, limit=300)
            message = f"database {db!r} is unavailable: {reason}"
            return with_status(ctx, error_response("unavailable", message, 503))

    @bentoml.api
    def databases(self) -> dict:
        """The configured databases by name and dialect (never a URL or password)."""
        return {"databases": [{"name": n, "dialect": d} for n, d in dbconfig.names()]}

    @bentoml.api
    def feedback(
        self,
        ctx: bentoml.Context,
        request_id: obs.RequestId,
        score: obs.Score,
        comment: obs.Comment | None = None,
        sql: ProposedSQL | None = None,
        question: Question | None = None,
        db: DbName = dbconfig.DEFAULT,
    ) -> obs.FeedbackResponse:
        """A user's score (0 bad .. 1 good) for an /ask `request_id`; joined to its log record offline.
        With `sql` (and the `question` it answers) it also proposes an example for `db`: stored for
        review (`askdb examples review`, POST /examples), never shown to the model until approved."""
        proposal = None
        if sql is not None:
            key = caller_key(ctx)
            if key is not None and not key.may_use(db):
                raise Forbidden(f"this API key may not use database '{db}'")
            database = open_database(db)
            try:
                proposal = example_store.store().propose(
                    db, question or "", sql, database.dialect, key=key.name if key else None,
                    comment=comment, request_id=request_id,
                )  # fmt: skip
            except ProposalError as err:
                raise proposal_error(err) from None
        record_feedback(request_id, score, comment)
        return obs.FeedbackResponse(
            request_id=request_id,
            score=score,
            recorded=quality_log().enabled,
            proposal_id=proposal.id if proposal else None,
        )

    @bentoml.api
    def examples(
        self,
        ctx: bentoml.Context,
        action: ReviewAction = "list",
        db: DbName = dbconfig.DEFAULT,
        id: ProposalId | None = None,
    ) -> dict:
        """Review proposed examples (admin keys only): `list` the pending ones, `approve` or `reject`
        one by `id`. An approved example joins the database's bank at once, in every worker."""
        key = caller_key(ctx)
        if not self.callers.is_admin(key):
            raise Forbidden("reviewing examples needs an API key with 'admin: true' (docs/security.md)")
        database = open_database(db)
        store = example_store.store()
        if action == "list":
            pending = [p.to_api() for p in store.proposals(db)]
            return {"db": db, "pending": pending, "approved": len(store.approved(db))}
        if not id:
            raise InvalidArgument(f"field 'id' is needed to {action} a proposal")
        assert key is not None  # is_admin said so
        try:
            decided = store.decide(db, id, action == "approve", key.name, database.dialect)
            audit.trail().append(
                "example", key=key.name, db=db, decision=decided.status, proposal=decided.id,
                question=decided.question, sql=decided.sql,
            )  # fmt: skip
        except ProposalError as err:
            raise proposal_error(err) from None
        except audit.AuditUnavailable as err:
            raise ServiceUnavailable(str(err)) from None
        return {"db": db, "id": decided.id, "status": decided.status}

    async def __metrics__(self, content: str) -> str:
        """BentoML's /metrics text plus askdb_runner_up, probed at scrape time."""
        runners = {"askdb-llm": self.models.llm, "askdb-embedding": self.models.embedder}
        return content + await obs.runner_up_text(runners)


# A client that leaves cancels its request, down to the LLM runner's row (runners/disconnect.py).
AskDB.add_asgi_middleware(CancelOnDisconnect)
# API keys, per-key rate limits and databases, body size: in front of every route (api/access.py).
AskDB.add_asgi_middleware(AccessMiddleware)
quiet_client_errors()  # a client's 4xx is one log line, not an ERROR with a traceback
http_protocol.install()  # header timeout and size limit, before any ASGI code (api/http_protocol.py)
