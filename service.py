"""askdb: the one service users talk to. It composes one runner per model (each scales on its own).

Serve with `bentoml serve` (the entry is named in bentofile.yaml) or `bentoml serve service:AskDB`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import bentoml
from annotated_types import Ge, Le, MaxLen, MinLen
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError

from api import http_protocol, limits
from api.access import AccessMiddleware
from api.bentoml_errors import quiet_client_errors
from api.dependency import RUNNER_DOWN, unavailable
from api.openai_app import app as openai_app
from api.schemas import EmbedResponse, GenerateResponse, Usage
from observability import service_hooks as obs
from observability.ask import AskObservation, quality_log, record_feedback
from pipeline import databases as dbconfig
from pipeline.ask import Asker, AskResponse, MaxRows, ModelName, Question, error_response, is_local
from pipeline.chain import AskOptions
from pipeline.schema import describe
from providers import UnknownModel, router
from runners import client as runner_client
from runners.client import GenerationRejected, RunnerBusy
from runners.disconnect import CancelOnDisconnect
from runners.embedding import Embedding
from runners.llm import LLM
from runners.schemas import GenRequest

Prompt = Annotated[str, MinLen(1), MaxLen(limits.MAX_PROMPT_CHARS)]
NewTokens = Annotated[int, Ge(1), Le(limits.MAX_NEW_TOKENS)]
Temperature = Annotated[float, Ge(0.0), Le(2.0)]
StopList = Annotated[
    list[Annotated[str, MinLen(1), MaxLen(limits.MAX_STOP_CHARS)]], MaxLen(limits.MAX_STOP_STRINGS)
]
Texts = Annotated[
    list[Annotated[str, MaxLen(limits.MAX_EMBED_TEXT_CHARS)]], MinLen(1), MaxLen(limits.MAX_EMBED_TEXTS)
]

DbName = Annotated[str, MinLen(1), MaxLen(64)]


def open_database(name: str) -> dbconfig.Database:
    """The named database, or a 404 that lists the configured names (never their URLs)."""
    try:
        return dbconfig.get(name)
    except dbconfig.UnknownDatabase as err:
        raise NotFound(str(err)) from None
    except dbconfig.ConfigError as err:
        raise ServiceUnavailable(f"database configuration error: {err}") from None


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
        self._llm_tag: str | None = None
        self._embed_info: tuple[str, int] | None = None

    async def llm_tag(self) -> str:
        if self._llm_tag is None:
            self._llm_tag = (await runner_client.call(self.llm.to_async.info)).tag
        return self._llm_tag

    async def complete(self, request: GenRequest) -> GenerateResponse:
        """One generation through the LLM runner's batch queue; per-request errors become 400s."""
        # The tag lookup runs alongside, not after: on SIGTERM BentoML stops the runner with this worker,
        # and a stopping runner refuses new calls, so a later one would 503 a request already in flight.
        result, tag = await asyncio.gather(runner_client.generate(self.llm, request), self.llm_tag())
        if result.finish_reason == "error":
            try:
                runner_client.raise_for(result.code, result.error)
            except GenerationRejected as err:
                raise InvalidArgument(str(err)) from None
        usage = Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        )
        return GenerateResponse(
            text=result.text,
            finish_reason=result.finish_reason,
            usage=usage,
            model=tag,
        )

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
            return unavailable("the LLM runner (askdb-llm)", err)
        except RunnerBusy:  # every slot taken and the queue full: come back shortly
            return unavailable("the LLM runner (askdb-llm)", state="at capacity")

    @bentoml.api
    async def embed(self, texts: Texts) -> EmbedResponse:
        """Normalised sentence embeddings, one per text."""
        try:
            vectors = await runner_client.call(self.embedder.to_async.embed, texts)
        except RUNNER_DOWN as err:
            return unavailable("the embedding runner (askdb-embedding)", err)
        if self._embed_info is None:
            info = await runner_client.call(self.embedder.to_async.info)
            self._embed_info = (info.tag, info.dim or len(vectors[0]))
        tag, dim = self._embed_info
        return EmbedResponse(embeddings=vectors, model=tag, dim=dim)

    @bentoml.api
    async def ask(
        self,
        question: Question,
        db: DbName = dbconfig.DEFAULT,
        max_rows: MaxRows = 100,
        model: ModelName | None = None,
        answer: bool = True,
        options: AskOptions | None = None,
    ) -> AskResponse:
        """A question in plain language -> SQL, rows and a short answer; 422 when unsafe or unanswerable."""
        database = open_database(db)
        tag = await self.llm_tag()
        if not is_local(model, tag):  # a provider or route name (providers/README.md), else 404
            try:
                router().plan(model, [tag, tag.split(":")[0]])
            except UnknownModel as err:
                return error_response("unknown_model", str(err), None, 404)
        opts = options or AskOptions()
        opts = opts.model_copy(update={"answer": answer and opts.answer})
        if getattr(self, "_asker", None) is None:
            self._asker = Asker(self.llm, self.embedder)
        observation = AskObservation(question, db, model=tag)
        return await self._asker.ask(
            question=question,
            db=database,
            max_rows=max_rows,
            tag=tag,
            options=opts,
            observation=observation,
            model=model,
        )

    @bentoml.api
    def schema(self, ctx: bentoml.Context, db: DbName = dbconfig.DEFAULT) -> dict:
        """Tables, columns (name, type, nullable, primary_key) and foreign keys of a configured database."""
        database = open_database(db)
        try:
            return describe(database).to_api()
        except (OSError, SQLAlchemyError) as err:
            # A dependency is down: 503 saying which (a raised 5xx reaches the client without its message).
            ctx.response.status_code = 503
            reason = database.error_message(err, limit=300)
            return {"error": {"type": "unavailable", "message": f"database {db!r} is unavailable: {reason}"}}

    @bentoml.api
    def databases(self) -> dict:
        """The configured databases by name and dialect (never a URL or password)."""
        return {"databases": [{"name": n, "dialect": d} for n, d in dbconfig.names()]}

    @bentoml.api
    def feedback(
        self, request_id: obs.RequestId, score: obs.Score, comment: obs.Comment | None = None
    ) -> obs.FeedbackResponse:
        """A user's score (0 bad .. 1 good) for an /ask `request_id`; joined to its log record offline."""
        record_feedback(request_id, score, comment)
        return obs.FeedbackResponse(request_id=request_id, score=score, recorded=quality_log().enabled)

    async def __metrics__(self, content: str) -> str:
        """BentoML's /metrics text plus askdb_runner_up, probed at scrape time."""
        return content + await obs.runner_up_text({"askdb-llm": self.llm, "askdb-embedding": self.embedder})


# A client that leaves cancels its request, down to the LLM runner's row (runners/disconnect.py).
AskDB.add_asgi_middleware(CancelOnDisconnect)
# API keys, per-key rate limits and databases, body size: in front of every route (api/access.py).
AskDB.add_asgi_middleware(AccessMiddleware)
quiet_client_errors()  # a client's 4xx is one log line, not an ERROR with a traceback
http_protocol.install()  # header timeout and size limit, before any ASGI code (api/http_protocol.py)
