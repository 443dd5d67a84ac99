"""The /ask endpoint's body: bounds on the request, the chain over the service's runners, the 422 shape.

service.py keeps only the route; this module turns a question into the API.md response, or into
`{"error": {"type", "message", "sql"}}` with HTTP 422 when the pipeline cannot answer safely.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any
from uuid import UUID

import aiohttp
from annotated_types import Ge, Le, MaxLen, MinLen
from bentoml.exceptions import BentoMLException
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.runnables import Runnable
from pydantic import BaseModel, WithJsonSchema
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import JSONResponse

import settings
from observability import audit
from observability.tracing import SpanCallback
from pipeline.chain import AskOptions, build_chain
from pipeline.embeddings import RunnerEmbeddings
from pipeline.llm import GenerationRejected, RunnerChatModel
from pipeline.policy import DataPolicy
from pipeline.repair import AskFailed
from providers import chat_model
from runners.client import RunnerBusy

MAX_QUESTION_CHARS = settings.get().max_question_chars
MAX_ROWS = settings.get().max_rows

Question = Annotated[str, MinLen(1), MaxLen(MAX_QUESTION_CHARS)]
MaxRows = Annotated[int, Ge(1), Le(MAX_ROWS)]
ModelName = Annotated[str, MaxLen(200)]
# A response field that may be null, published the OpenAPI 3.0 way (`nullable`): BentoML's document
# is 3.0.2, where pydantic's `anyOf: [..., {"type": "null"}]` reads as never null (tests/test_fuzz.py).
NullableFloat = Annotated[float | None, WithJsonSchema({"type": "number", "nullable": True})]

# chain step name -> observability stage
STAGES = {"schema": "schema", "generate-guard-execute-repair": "generate", "answer": "answer"}


class AskUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AskResponse(BaseModel):
    question: str
    db: str
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    answer: str
    attempts: int
    model: str
    usage: AskUsage
    latency_ms: float
    request_id: str | None = None
    tables: list[str] = []  # the tables the prompt showed (after selection)
    examples: list[str] = []  # the few-shot questions the prompt showed
    explanation: str = ""  # what the SQL does, in words, from its syntax tree (pipeline/explain.py)
    confidence: NullableFloat = (
        None  # 0..1 from token log-probabilities (pipeline/confidence.py); null for providers without them
    )


def error_response(kind: str, message: str, sql: str | None = None, status: int = 422) -> JSONResponse:
    headers = {"retry-after": "5"} if status == 503 else None  # a dependency down or busy: come back
    body = {"error": {"type": kind, "message": message, "sql": sql}}
    return JSONResponse(body, status_code=status, headers=headers)


def is_local(model: str | None, tag: str) -> bool:
    """null, the served tag, or its name with or without a version select the local runner."""
    if model is None or model in ("", tag, "local"):
        return True
    name = tag.split(":", 1)[0]
    return model in (name, f"{name}:latest")


class StageTimer(AsyncCallbackHandler):
    """Times the chain's named steps into the request's observation (for askdb_ask_stage_seconds)."""

    def __init__(self, observation: Any) -> None:
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
    """One chain per service process, built on first use over the runner handles."""

    def __init__(self, llm_handle: Any, embed_handle: Any) -> None:
        self.llm_handle, self.embed_handle = llm_handle, embed_handle
        self.chain: Runnable | None = None
        self.routed: dict[str, Runnable] = {}

    def get_chain(self, tag: str, model: str | None = None) -> Runnable:
        if not is_local(model, tag):  # a provider or route (providers/): its own chain, built once
            assert model is not None
            if model not in self.routed:
                llm = chat_model(model, [tag, tag.split(":")[0]])
                self.routed[model] = build_chain(llm, RunnerEmbeddings(self.embed_handle))  # type: ignore[arg-type]
            return self.routed[model]
        if self.chain is None:
            llm = RunnerChatModel(runner=self.llm_handle, model_name=tag, logprobs=0)  # for `confidence`
            self.chain = build_chain(llm, RunnerEmbeddings(self.embed_handle))
        return self.chain

    async def ask(
        self,
        *,
        question: str,
        db: Any,
        max_rows: int,
        tag: str,
        options: AskOptions,
        observation: Any,
        model: str | None = None,
        policy: DataPolicy | None = None,
        caller: str | None = None,
    ) -> AskResponse | JSONResponse:
        """The answer, then its audit record; no answer leaves without one (503 if it cannot be written)."""
        state = {"question": question, "db": db, "max_rows": max_rows, "options": options, "policy": policy}
        response, record = await self._answer(state, tag, observation, model)
        name = getattr(db, "name", str(db))
        try:
            trail = audit.trail()
            fields = {"request_id": observation.request_id, "key": caller, "db": name, "question": question}
            await asyncio.to_thread(trail.append, "ask", **fields, **record)
        except audit.AuditUnavailable as err:
            return error_response("unavailable", str(err), None, 503)
        return response

    async def _answer(
        self, state: dict, tag: str, observation: Any, model: str | None
    ) -> tuple[AskResponse | JSONResponse, dict[str, Any]]:
        """(the response, the audit fields of what happened)."""
        # SpanCallback: one OpenTelemetry span per chain step, under the request's span
        config = {"callbacks": [StageTimer(observation), SpanCallback()], "run_name": "askdb.ask"}
        db = state["db"]

        def failed(
            kind: str,
            message: str,
            status: int = 422,
            sql: str | None = None,
            error: str | None = None,
            **obs: Any,
        ) -> tuple[JSONResponse, dict[str, Any]]:
            outcome = "error" if status >= 500 else kind
            ms = observation.finish(outcome, sql=sql, error=error or message, model=tag, **obs)
            record = {"sql": sql, "row_count": None, "outcome": outcome, "error": error or message}
            return error_response(kind, message, sql, status), {**record, "latency_ms": round(ms, 2)}

        try:
            out = await self.get_chain(tag, model).ainvoke(state, config=config)
        except AskFailed as err:
            return failed(err.kind, err.message, sql=err.sql, attempts=err.attempts)
        except aiohttp.ClientError as err:  # a runner process is down (before OSError: some are OSErrors)
            why = f"the model runners are unavailable ({type(err).__name__})"
            return failed("unavailable", why, 503, error=type(err).__name__)
        except (OSError, SQLAlchemyError) as err:  # the database is down: a dependency, so 503
            reason = db.scrub(str(err).splitlines()[0])[:300] if hasattr(db, "scrub") else type(err).__name__
            return failed("unavailable", f"database is unavailable: {reason}", 503, error=type(err).__name__)
        except BentoMLException as err:  # a runner is down or overloaded: a dependency, so 503
            why = f"the model runners could not answer: {err.message}"
            return failed("unavailable", why, 503, error=type(err).__name__)
        except RunnerBusy as err:  # every engine slot taken and its queue full: retry shortly
            return failed("unavailable", f"{err}; retry shortly", 503, error="RunnerBusy")
        except GenerationRejected as err:  # e.g. the schema and examples do not fit the context
            return failed("unanswerable", f"the model could not take this question: {err}", error=str(err))
        usage = out["usage"]
        # The model that answered: a route's provider (or its fallback) reports its own name.
        names = [tag if m == "local" else m for m in out.pop("models", None) or []]
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
        response = AskResponse(
            **out, model=answered_by, latency_ms=latency, request_id=observation.request_id
        )
        return response, {**record, "latency_ms": latency}
