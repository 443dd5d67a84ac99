"""The OpenAI-compatible API, a FastAPI app that service.py mounts at /v1 on the AskDB service.

Chat goes through providers.chat_model (routing by `model`, weights, LCEL fallbacks); completions
and embeddings are served by askdb's own runners. Runner handles come from the AskDB instance that
BentoML registers as the current service in this worker (`bentoml.get_current_service()`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import bentoml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from api import openai_errors as errors
from api.openai_schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, Message
from api.openai_sse import chat_stream, completion_stream
from api.usage import ledger_of
from providers import LOCAL, PROVIDER_KEY, chat_model, router
from providers.local import local_tag
from runners import client as runner_client
from runners.client import GenerationRejected, RunnerBusy
from runners.schemas import GenRequest

PROVIDER_HEADER = "x-askdb-provider"

app = FastAPI(title="askdb OpenAI-compatible API", docs_url=None, redoc_url=None, openapi_url=None)
errors.install(app)
# Streaming answers are event streams: say so in the OpenAPI document BentoML publishes.
STREAMS = {200: {"content": {"application/json": {}, "text/event-stream": {}}}}


def _service() -> Any:
    return bentoml.get_current_service()


async def local_aliases() -> list[str]:
    """Names that mean askdb's own LLM: its full store tag and the tag's name part."""
    tag = await local_tag()
    return [tag, tag.split(":")[0]]


def to_langchain(messages: list[Message]) -> list[BaseMessage]:
    kinds = {
        "system": SystemMessage,
        "developer": SystemMessage,
        "user": HumanMessage,
        "assistant": AIMessage,
    }
    return [kinds[m.role](content=m.text()) for m in messages]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _answered_model(req_model: str | None, provider: str, tag: str) -> str:
    return tag if provider == LOCAL else (req_model or provider)


@app.get("/models")
async def list_models() -> dict:
    """Served models, providers and routes by name only: never a URL or a key."""
    svc, now = _service(), int(time.time())
    embed_tag = str((await runner_client.call(svc.embedder.to_async.info)).tag)
    cfg = router().config
    owned = [(n, "askdb") for n in [*await local_aliases(), LOCAL, embed_tag]]
    owned += [(n, "provider") for n in cfg.providers] + [(n, "route") for n in cfg.routes]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": now, "owned_by": o} for n, o in owned],
    }


@app.post("/chat/completions", response_model=None, responses=STREAMS)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    model = chat_model(body.model, await local_aliases())
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
    messages, tag = to_langchain(body.messages), await local_tag()
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
    reply = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": _answered_model(body.model, provider, tag),
        "provider": provider,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(answer.content)},
                "finish_reason": answer.response_metadata.get("finish_reason", "stop"),
            }
        ],
        "usage": _usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
    }
    return JSONResponse(reply, headers={PROVIDER_HEADER: provider})


@app.post("/completions", response_model=None, responses=STREAMS)
async def completions(body: CompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    aliases = await local_aliases()
    if body.model not in (None, LOCAL, *aliases):
        router().plan(body.model, aliases)  # 404 for unknown names
        raise errors.APIError(
            404,
            f"model {body.model!r} serves chat only; /v1/completions runs on {aliases[0]}",
            "model",
            "model_not_found",
        )
    job = GenRequest(
        prompt=body.text(),
        max_new_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
    )
    cid, created, tag, headers = (
        f"cmpl-{uuid.uuid4().hex}",
        int(time.time()),
        aliases[0],
        {PROVIDER_HEADER: LOCAL},
    )
    if body.stream:
        ledger = ledger_of(request.scope)
        sse = completion_stream(_service().llm, job, cid, created, tag, body.include_usage(), ledger)
        first = await anext(sse)  # a rejected prompt is a 400, not a broken stream
        return StreamingResponse(_prepend(first, sse), media_type="text/event-stream", headers=headers)
    result = await runner_client.generate(_service().llm, job)
    if result.finish_reason == "error":
        runner_client.raise_for(result.code, result.error)
    reply = {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": tag,
        "provider": LOCAL,
        "choices": [
            {"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}
        ],
        "usage": _usage(result.prompt_tokens, result.completion_tokens),
    }
    return JSONResponse(reply, headers=headers)


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for item in rest:
        yield item


@app.post("/embeddings")
async def embeddings(body: EmbeddingRequest) -> dict:
    svc = _service()
    info = await runner_client.call(svc.embedder.to_async.info)
    tag = str(info.tag)
    if body.model not in (None, LOCAL, tag, tag.split(":")[0]):
        raise errors.APIError(
            404, f"embedding model {body.model!r} does not exist; use {tag}", "model", "model_not_found"
        )
    if body.dimensions is not None and body.dimensions != info.dim:
        raise errors.APIError(
            400, f"dimensions: this model returns {info.dim}, not {body.dimensions}", "dimensions"
        )
    texts = body.texts()
    vectors = await runner_client.call(svc.embedder.to_async.embed, texts)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    tokens = sum(len(t.split()) for t in texts)  # the runner does not report tokens: words are close
    return {
        "object": "list",
        "data": data,
        "model": tag,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encode(vector: list[float], fmt: str) -> list[float] | str:
    if fmt == "float":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
