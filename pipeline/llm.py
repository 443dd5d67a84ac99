"""The local LLM runner as a LangChain chat model, so the chain takes it or any other chat model.

Inside the service the runner is the `bentoml.depends(LLM)` handle; outside, a runner served on its
own (`bentoml serve runners.llm:LLM`) is reached with `bentoml.SyncHTTPClient` (async calls run it in
a thread). Both expose the runner's batchable `generate(list[GenRequest]) -> list[GenResult]`, so concurrent
calls (several self-consistency candidates, several users) share the runner's batches.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

from runners import client as runner_client
from runners.client import GenerationRejected
from runners.schemas import ChatMessage, GenRequest, GenResult

__all__ = ["GenerationRejected", "RunnerChatModel", "to_chat_messages"]

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


class RunnerChatModel(BaseChatModel):
    """Chat model over askdb's LLM runner. `runner` is a dependency handle or an HTTP client."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

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
            meta["logprobs"] = [t.logprob for t in result.logprobs]
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
