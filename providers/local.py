"""The `local` provider: askdb's own runners as LangChain models (`RunnerChatModel`, `RunnerEmbeddings`).

`runner` is the AskDB service's `bentoml.depends` handle (held by providers/resolver.py) or, outside
the service, a `bentoml.SyncHTTPClient` to a runner served on its own (`bentoml serve
runners.llm:LLM`; async calls then run it in a thread). Both expose the runner's batchable
`generate(list[GenRequest]) -> list[GenResult]`, so concurrent calls (several self-consistency
candidates, several users) share the runner's batches. Streaming reads the runner's `stream` API
(newline-delimited StreamEvent JSON, see runners/engine.py).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.embeddings import Embeddings
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from runners import client as runner_client
from runners.schemas import ChatMessage, GenRequest, GenResult

__all__ = ["RunnerChatModel", "RunnerEmbeddings", "runner_events", "to_chat_messages"]

_ROLES = {"system": "system", "human": "user", "ai": "assistant"}


def to_chat_messages(messages: list[BaseMessage]) -> list[ChatMessage]:
    out = []
    for m in messages:
        role = _ROLES.get(m.type)
        if role is None:
            raise ValueError(f"message type {m.type!r} is not supported by the local runner")
        out.append(ChatMessage(role=role, content=str(m.content)))
    return out


def _result(raw: Any) -> GenResult:
    # the in-process handle returns models; an HTTP client may return plain dicts
    return raw if isinstance(raw, GenResult) else GenResult.model_validate(raw)


async def runner_events(runner: Any, job: GenRequest) -> AsyncIterator[dict]:
    """StreamEvent dicts from the LLM runner. Closing this iterator before the last event (the
    client left) closes the HTTP stream and tells the runner to free the row at once."""
    stream = runner.to_async.stream(job=job)
    if inspect.isawaitable(stream):
        stream = await stream
    buffer, finished = "", False
    try:
        async for piece in stream:  # HTTP chunks do not follow event boundaries
            buffer += piece.decode() if isinstance(piece, bytes) else str(piece)
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.strip():
                    event = json.loads(line)
                    finished = event.get("finish_reason") is not None
                    yield event
    finally:
        if not finished:
            runner_client.cancel_later(runner, [job.id])
        await stream.aclose()


class RunnerChatModel(BaseChatModel):
    """Chat model over askdb's LLM runner, batch calls and token streaming."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    # pipeline/generate.py binds a `grammar` only to models that say they decode under one
    takes_grammar: ClassVar[bool] = True

    runner: Any = Field(exclude=True)
    model_name: str = "local"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: list[str] | None = None
    # ask the runner for each generated token's log-probability (0: the chosen token's alone), so
    # answers can carry a confidence (pipeline/confidence.py); None: not asked
    logprobs: int | None = None

    @property
    def _llm_type(self) -> str:
        return "askdb-runner"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> GenRequest:
        return GenRequest(
            messages=to_chat_messages(messages),
            max_new_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            seed=kwargs.get("seed", self.seed),
            stop=list(stop or self.stop or []),
            grammar=kwargs.get("grammar"),
            logprobs=kwargs.get("logprobs", self.logprobs),
            ignore_eos=bool(kwargs.get("ignore_eos", False)),  # vLLM's extension: fixed-length answers
        )

    def _chat_result(self, result: GenResult) -> ChatResult:
        if result.finish_reason == "error":
            runner_client.raise_for(result.code, result.error)
        usage = {
            "input_tokens": result.prompt_tokens,
            "output_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        }
        meta: dict[str, Any] = {"finish_reason": result.finish_reason, "model_name": self.model_name}
        if result.logprobs:
            # OpenAI's shape, as langchain-openai gives it: pipeline/confidence.py needs the tokens too
            content = [{"token": t.token, "logprob": t.logprob} for t in result.logprobs]
            meta["logprobs"] = {"content": content}
        message = AIMessage(content=result.text, usage_metadata=usage, response_metadata=meta)
        return ChatResult(
            generations=[ChatGeneration(message=message)], llm_output={"model_name": self.model_name}
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, **kwargs)
        if hasattr(self.runner, "to_sync"):  # in-process dependency handle
            raw = self.runner.to_sync.generate([request])
        else:
            raw = self.runner.generate(requests=[request])
        return self._chat_result(_result(raw[0]))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, **kwargs)
        if hasattr(self.runner, "to_async"):
            return self._chat_result(await runner_client.generate(self.runner, request))
        return await super()._agenerate(messages, stop, run_manager, **kwargs)  # thread pool

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Real streaming through the runner's continuous-batching step loop."""
        job = self._request(messages, stop, **kwargs)
        events = runner_events(self.runner, job)
        try:
            async for event in events:
                reason = event.get("finish_reason")
                if reason == "error":
                    runner_client.raise_for(event.get("code"), event.get("error"))
                p, c = event.get("prompt_tokens", 0), event.get("completion_tokens", 0)
                # counts so far on every chunk, so a consumer that stops early can meter them
                # (api/openai_sse.py); LangChain sums them when it merges chunks: read them per chunk
                so_far = {"askdb_tokens_so_far": {"prompt_tokens": p, "completion_tokens": c}}
                chunk = AIMessageChunk(content=event.get("text", ""), response_metadata=so_far)
                if reason is not None:
                    chunk = AIMessageChunk(
                        content=chunk.content,
                        usage_metadata={"input_tokens": p, "output_tokens": c, "total_tokens": p + c},
                        response_metadata={"finish_reason": reason, "model_name": self.model_name},
                        chunk_position="last",
                    )
                if run_manager and chunk.content:
                    await run_manager.on_llm_new_token(str(chunk.content))
                yield ChatGenerationChunk(message=chunk)
        finally:
            await events.aclose()


class RunnerEmbeddings(Embeddings):
    """Sentence embeddings from askdb's Embedding runner; vectors come back L2-normalised."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if hasattr(self.runner, "to_sync"):
            return list(self.runner.to_sync.embed(texts))
        return list(self.runner.embed(texts=texts))

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if hasattr(self.runner, "to_async"):
            return list(await runner_client.call(self.runner.to_async.embed, texts))
        return await super().aembed_documents(texts)  # a sync client, in a thread

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]
