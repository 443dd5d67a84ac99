"""/ask around the text-to-SQL chain: which chain answers, the observation, the audit record, and the
pipeline's failures as HTTP answers (API.md's error body with `sql`: 422 when the pipeline cannot
answer safely, 404 for an unknown model, 503 naming the dependency that is down).

service.py's route validates the fields and calls `Asker.ask`; the chain itself (pipeline/) is
handed a LangChain chat model and Embeddings by `providers.Models` and knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
from bentoml.exceptions import BentoMLException
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import Runnable
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

from api.dependency import open_database
from api.protocol import AskResponse, error_response
from observability import audit
from observability.ask import AskObservation
from observability.tracing import SpanCallback
from pipeline.chain import AskInput, AskOptions, AskResult, build_chain
from pipeline.databases import Database
from pipeline.policy import DataPolicy
from pipeline.repair import AskFailed
from providers import Choice, Models, UnknownModel
from runners.client import GenerationRejected, RunnerBusy

# chain step name -> observability stage
STAGES = {"schema": "schema", "generate-guard-execute-repair": "generate", "answer": "answer"}
# What the chain raises that has an HTTP answer (`failure` maps each); anything else is a bug: 500.
PIPELINE_FAILURES = (
    AskFailed, aiohttp.ClientError, OSError, SQLAlchemyError, BentoMLException, RunnerBusy,
    GenerationRejected,
)  # fmt: skip


@dataclass(frozen=True)
class Failure:
    kind: str  # the error body's `type`; the quality log's outcome for a 4xx
    message: str
    status: int = 422
    sql: str | None = None
    error: str | None = None  # what the logs record (default: the message)
    attempts: int = 0


def failure(err: BaseException, db: Database) -> Failure:
    """A pipeline failure as the client's answer: the pipeline's own verdict is a 422, a dependency
    that is down (runner, database) a 503 naming it."""
    if isinstance(err, AskFailed):
        return Failure(err.kind, err.message, sql=err.sql, attempts=err.attempts)
    name = type(err).__name__
    if isinstance(err, aiohttp.ClientError):  # a runner process is down (before OSError: some are OSErrors)
        return Failure("unavailable", f"the model runners are unavailable ({name})", 503, error=name)
    if isinstance(err, OSError | SQLAlchemyError):  # the database is down: a dependency, so 503
        reason = db.scrub(str(err).splitlines()[0])[:300] if str(err) else name
        return Failure("unavailable", f"database is unavailable: {reason}", 503, error=name)
    if isinstance(err, BentoMLException):  # a runner is down or overloaded: a dependency, so 503
        return Failure("unavailable", f"the model runners could not answer: {err.message}", 503, error=name)
    if isinstance(err, RunnerBusy):  # every engine slot taken and its queue full: retry shortly
        return Failure("unavailable", f"{err}; retry shortly", 503, error="RunnerBusy")
    assert isinstance(err, GenerationRejected)  # e.g. the schema and examples do not fit the context
    return Failure("unanswerable", f"the model could not take this question: {err}", error=str(err))


def ask_error(f: Failure) -> JSONResponse:
    return error_response(f.kind, f.message, f.status, sql=f.sql)


class StageTimer(AsyncCallbackHandler):
    """Times the chain's named steps into the request's observation (for askdb_ask_stage_seconds)."""

    def __init__(self, observation: AskObservation) -> None:
        self.observation = observation
        self.started: dict[UUID, tuple[str, float]] = {}

    async def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        stage = STAGES.get(kwargs.get("name") or "")
        if stage:
            self.started[run_id] = (stage, time.perf_counter())

    async def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id)

    async def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id)

    def _stop(self, run_id: UUID) -> None:
        if run_id in self.started:
            stage, t0 = self.started.pop(run_id)
            stages = self.observation.stages
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t0


class Asker:
    """One chain per answering model (the local runner, each provider or route), built on first use."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.chains: dict[str | None, Runnable] = {}  # None: the local runner

    async def chain(self, choice: Choice, tag: str) -> Runnable:
        key = None if choice.local else choice.model
        if key not in self.chains:
            if choice.local:  # log-probabilities for `confidence`
                llm = self.models.local_chat_model(model_name=tag, logprobs=0)
            else:
                llm = await self.models.chat_model(choice.model)
            self.chains[key] = build_chain(llm, self.models.embeddings())  # type: ignore[arg-type]
        return self.chains[key]

    async def ask(
        self,
        *,
        question: str,
        db: str,
        max_rows: int,
        model: str | None,
        options: AskOptions | None,
        answer: bool = True,
        policy: DataPolicy | None = None,
        caller: str | None = None,
    ) -> AskResponse | JSONResponse:
        """The answer, then its audit record; no answer leaves without one (503 if it cannot be written).
        `answer=False` (the request's top-level field) skips the answer whatever `options` say."""
        database = open_database(db)
        try:
            choice = await self.models.resolve(model)  # a provider or route name, else 404
        except UnknownModel as err:
            return ask_error(Failure("unknown_model", str(err), 404))
        tag = await self.models.llm_tag()
        opts = options or AskOptions()
        opts = opts.model_copy(update={"answer": answer and opts.answer})
        observation = AskObservation(question, db, model=tag)
        state: AskInput = {
            "question": question, "db": database, "max_rows": max_rows, "options": opts, "policy": policy,
        }  # fmt: skip
        response, record = await self._answer(state, choice, tag, observation)
        try:
            rid = observation.request_id
            fields = {"request_id": rid, "key": caller, "db": database.name, "question": question}
            await asyncio.to_thread(audit.trail().append, "ask", **fields, **record)
        except audit.AuditUnavailable as err:
            return ask_error(Failure("unavailable", str(err), 503))
        return response

    async def _answer(
        self, state: AskInput, choice: Choice, tag: str, observation: AskObservation
    ) -> tuple[AskResponse | JSONResponse, dict[str, Any]]:
        """(the response, the audit fields of what happened)."""
        # SpanCallback: one OpenTelemetry span per chain step, under the request's span
        config = {"callbacks": [StageTimer(observation), SpanCallback()], "run_name": "askdb.ask"}
        try:
            out: AskResult = await (await self.chain(choice, tag)).ainvoke(state, config=config)
        except PIPELINE_FAILURES as err:
            f = failure(err, state["db"])  # type: ignore[arg-type]
            outcome = "error" if f.status >= 500 else f.kind
            error = f.error or f.message
            ms = observation.finish(outcome, sql=f.sql, error=error, model=tag, attempts=f.attempts)
            record = {"sql": f.sql, "row_count": None, "outcome": outcome, "error": error}
            return ask_error(f), {**record, "latency_ms": round(ms, 2)}
        return self._answered(out, tag, observation)

    @staticmethod
    def _answered(
        out: AskResult, tag: str, observation: AskObservation
    ) -> tuple[AskResponse, dict[str, Any]]:
        usage = out["usage"]
        # The model that answered: a route's provider (or its fallback) reports its own name.
        names = [tag if m == "local" else m for m in out["models"]]
        answered_by = ", ".join(dict.fromkeys(names)) or tag
        latency = round(
            observation.finish(
                "ok",
                sql=out["sql"],
                attempts=out["attempts"],
                row_count=out["row_count"],
                prompt_tokens=usage["prompt_tokens"],
                completion_tokens=usage["completion_tokens"],
                model=answered_by,
            ),
            2,
        )
        record = {"sql": out["sql"], "row_count": out["row_count"], "outcome": "ok", "error": None}
        fields = {k: v for k, v in out.items() if k != "models"}
        response = AskResponse(
            **fields, model=answered_by, latency_ms=latency, request_id=observation.request_id
        )
        return response, {**record, "latency_ms": latency}
