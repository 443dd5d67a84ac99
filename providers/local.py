"""The `local` provider: askdb's own LLM runner as a LangChain chat model, with token streaming.

Batch calls reuse pipeline.llm.RunnerChatModel (the runner's batchable `generate`); streaming reads
the runner's `stream` API (newline-delimited StreamEvent JSON, see runners/engine.py). The runner
handle is the AskDB service's `bentoml.depends(LLM)`, found through `bentoml.get_current_service()`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import bentoml
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk

from pipeline.llm import RunnerChatModel
from runners import client as runner_client
from runners.schemas import GenRequest


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


class LocalChatModel(RunnerChatModel):
    """RunnerChatModel plus real streaming through the runner's continuous-batching step loop."""

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, **kwargs: Any) -> GenRequest:
        job = super()._request(messages, stop, **kwargs)
        job.ignore_eos = bool(kwargs.get("ignore_eos", False))  # vLLM's extension: fixed-length answers
        return job

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
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


_tag: str | None = None


async def local_tag() -> str:
    """The served LLM's model-store tag (asked once)."""
    global _tag
    if _tag is None:
        svc = bentoml.get_current_service()
        _tag = str((await runner_client.call(svc.llm.to_async.info)).tag)
    return _tag


def local_chat_model(model_name: str = "local") -> LocalChatModel:
    return LocalChatModel(runner=bentoml.get_current_service().llm, model_name=model_name)
