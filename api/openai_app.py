"""The OpenAI-compatible API, a FastAPI app that service.py mounts at /v1 on the AskDB service.

Chat goes through the provider chain of `model` (providers/: routing, weights, LCEL fallbacks);
completions and embeddings are served by askdb's own runners. Both are reached through the AskDB
instance's `Models` (providers/resolver.py), found as BentoML hands a mounted app its service:
`bentoml.get_current_service()` (what it injects as `self` into class-based FastAPI routes).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from api import openai_errors as errors
from api import openai_local as engine_path
from api.openai_engine_sse import chat_chunks, completion_chunks, merged, prime
from api.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingData,
    EmbeddingList,
    EmbeddingRequest,
    Message,
    ModelCard,
    ModelList,
    Usage,
)
from api.openai_sse import chat_stream
from api.usage import ledger_of
from providers import LOCAL, PROVIDER_KEY, LocalNames, Models, router
from runners.client import GenerationRejected, RunnerBusy

PROVIDER_HEADER = "x-askdb-provider"

app = FastAPI(title="askdb OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
errors.install(app)
# Streaming answers are event streams: say so in the OpenAPI document BentoML publishes.
STREAMS = {200: {"content": {"application/json": {}, "text/event-stream": {}}}}


def _models() -> Models:
    """The worker's AskDB service's runners and resolver (service.py)."""
    return bentoml.get_current_service().models


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    kinds = {
        "system": SystemMessage,
        "developer": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    return [kinds[m.role](content=m.text()) for m in messages]


def _answered_model(req_model: str | None, provider: str, tag: str) -> str:
    return tag if provider == LOCAL else (req_model or provider)


@app.get("/models")
async def list_models() -> ModelList:
    """Served models, providers and routes by name only: never a URL or a key."""
    models, now = _models(), int(time.time())
    embed_tag = str((await models.embed_info()).tag)
    cfg = router().config
    owned = [(n, "askdb") for n in [*(await models.llm_names()).listed, LOCAL, embed_tag]]
    owned += [(n, "provider") for n in cfg.providers] + [(n, "route") for n in cfg.routes]
    return ModelList(data=[ModelCard(id=n, created=now, owned_by=o) for n, o in owned])


def _engine_field(body: ChatCompletionRequest) -> str:
    """The first field that needs askdb's own engine, to name in a refusal."""
    for name, used in [
        ("response_format", body.structured()),
        ("tools", bool(body.tools)),
        ("logprobs", body.logprobs),
        ("n", body.n > 1),
    ]:
        if used:
            return name
    return "messages"


async def _engine_chat(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    """Grammars, tools, log-probabilities and n choices: askdb's own model, straight on the engine."""
    models = _models()
    tag, primary = (await models.llm_names()).tag, (await models.plan(body.model)).chain[0]
    if primary != LOCAL:
        field = _engine_field(body)
        raise errors.APIError(
            400,
            f"{field}: served by askdb's own model ({tag}) only; "
            f"{body.model or 'the default route'!r} went to provider {primary!r}",
            field,
            "unsupported_for_provider",
        )
    cid, headers = f"chatcmpl-{uuid.uuid4().hex}", {PROVIDER_HEADER: LOCAL}
    if body.stream:
        jobs, grammar = engine_path.chat_jobs(body)
        head, rest = await prime(merged(models.llm, jobs), grammar)
        base = {"id": cid, "created": int(time.time()), "model": tag, "provider": LOCAL}
        sse = chat_chunks(body, head, rest, base, ledger_of(request.scope), grammar)
        return StreamingResponse(sse, media_type="text/event-stream", headers=headers)
    reply = await engine_path.chat(body, models.llm, cid, tag)
    return JSONResponse(reply.model_dump(), headers=headers)


@app.post("/chat/completions", response_model=None, responses=STREAMS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    if body.needs_engine():
        return await _engine_chat(body, request)
    models = _models()
    model = await models.chat_model(body.model)
    params: dict[str, Any] = {
        "max_tokens": body.budget(),
        "temperature": body.temperature,
        "top_p": body.top_p,
    }
    if body.seed is not None:
        params["seed"] = body.seed
    if body.stops():
        params["stop"] = body.stops()
    if body.ignore_eos:
        params["ignore_eos"] = True
    messages, tag = to_langchain(body.messages), await models.llm_tag()
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        chunks = model.astream(messages, **params)
        try:
            first = await anext(chunks)  # fail before the 200 is sent, so errors keep their status
        except StopAsyncIteration:
            first = AIMessage(content="")
        except (GenerationRejected, RunnerBusy):
            raise
        except Exception as exc:
            return errors.upstream(exc, body.model or router().config.default)
        provider = first.response_metadata.get(PROVIDER_KEY, LOCAL)
        name = _answered_model(body.model, provider, tag)
        ledger = ledger_of(request.scope)  # the key's tokens/min meter (api/access.py), if it has one
        sse = chat_stream(first, chunks, cid, created, name, provider, body.include_usage(), ledger)
        return StreamingResponse(sse, media_type="text/event-stream", headers={PROVIDER_HEADER: provider})
    try:
        answer = await model.ainvoke(messages, **params)
    except (GenerationRejected, RunnerBusy):
        raise
    except Exception as exc:
        return errors.upstream(exc, body.model or router().config.default)
    provider = answer.response_metadata.get(PROVIDER_KEY, LOCAL)
    usage = answer.usage_metadata or {}
    choice = ChatChoice(
        index=0,
        message=AssistantMessage(content=str(answer.content)),
        finish_reason=answer.response_metadata.get("finish_reason", "stop"),
    )
    reply = ChatCompletion(
        id=cid,
        created=created,
        model=_answered_model(body.model, provider, tag),
        provider=provider,
        choices=[choice],
        usage=Usage.of(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
    )
    return JSONResponse(reply.model_dump(), headers={PROVIDER_HEADER: provider})


@app.post("/completions", response_model=None, responses=STREAMS)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    models = _models()
    tag = await models.llm_tag()
    if not (await models.resolve(body.model)).local:  # a provider or route (unknown names: 404)
        raise errors.APIError(
            404,
            f"model {body.model!r} serves chat only; /v1/completions runs on {tag}",
            "model",
            "model_not_found",
        )
    cid, headers = f"cmpl-{uuid.uuid4().hex}", {PROVIDER_HEADER: LOCAL}
    if body.stream:
        jobs, grammar = engine_path.completion_jobs(body)
        head, rest = await prime(merged(models.llm, jobs), grammar)  # a rejected prompt: 400
        base = {"id": cid, "created": int(time.time()), "model": tag, "provider": LOCAL}
        sse = completion_chunks(head, rest, base, body.include_usage(), ledger_of(request.scope), grammar)
        return StreamingResponse(sse, media_type="text/event-stream", headers=headers)
    reply: Completion = await engine_path.completion(body, models.llm, cid, tag)
    return JSONResponse(reply.model_dump(), headers=headers)


@app.post("/embeddings")
async def embeddings(body: EmbeddingRequest) -> EmbeddingList:
    models = _models()
    info = await models.embed_info()
    tag = str(info.tag)
    if not LocalNames(tag).means_local(body.model):
        raise errors.APIError(
            404, f"embedding model {body.model!r} does not exist; use {tag}", "model", "model_not_found"
        )
    if body.dimensions is not None and body.dimensions != info.dim:
        raise errors.APIError(
            400, f"dimensions: this model returns {info.dim}, not {body.dimensions}", "dimensions"
        )
    texts = body.texts()
    vectors = await models.embed(texts)
    data = [EmbeddingData(index=i, embedding=_encode(v, body.encoding_format)) for i, v in enumerate(vectors)]
    tokens = sum(len(t.split()) for t in texts)  # the runner does not report tokens: words are close
    return EmbeddingList(data=data, model=tag, usage=Usage.of(tokens, 0))


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
