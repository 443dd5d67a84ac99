"""Provider chat models wrapped for routing: per-provider metrics and tagging, LCEL fallbacks.

`chat_model(name, local_aliases, local)` is what /ask and /v1/chat/completions use (through
providers/resolver.py, which hands it the LLM runner's chat model as `local`): a Runnable that takes
messages (and bind()/invoke kwargs max_tokens, temperature, top_p, seed, stop), draws its provider
chain per call, and answers with the first provider that does not time out, rate-limit (429) or fail
(5xx, connection). The answering provider's name is in `response_metadata["askdb_provider"]`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from functools import cache
from typing import Any

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_openai import ChatOpenAI

from providers import config as config_mod
from providers import metrics
from providers.routing import Plan, Router

PROVIDER_KEY = "askdb_provider"
# What makes the next provider take over: the openai client already retried these with backoff.
FALLBACK_ON: tuple[type[BaseException], ...] = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


@cache
def router() -> Router:
    return Router(config_mod.load())


@cache
def provider_model(name: str) -> BaseChatModel:
    """One client per external provider for the process (connection pools are reused)."""
    spec = router().config.providers[name]
    return ChatOpenAI(
        model=spec.model,
        base_url=spec.base_url,
        api_key=spec.api_key(),
        timeout=spec.timeout,
        max_retries=spec.max_retries,
        stream_usage=True,
    )


class ProviderRunnable(Runnable[Any, BaseMessage]):
    """One provider's model: counts outcomes and fallbacks, stamps its name on the answer."""

    def __init__(self, name: str, route: str, last: bool, local: BaseChatModel) -> None:
        self.name, self.route, self.last = name, route, last
        self.model = local if name == config_mod.LOCAL else provider_model(name)

    def _tag(self, message: BaseMessage) -> BaseMessage:
        message.response_metadata[PROVIDER_KEY] = self.name
        return message

    def _failed(self, exc: BaseException) -> None:
        metrics.requests.labels(self.name, self.route, metrics.failure_kind(exc)).inc()
        if not self.last and isinstance(exc, FALLBACK_ON):
            metrics.fallbacks.labels(self.name, self.route).inc()

    def _ok(self, started: float) -> None:
        metrics.requests.labels(self.name, self.route, "ok").inc()
        metrics.latency.labels(self.name).observe(time.monotonic() - started)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        started = time.monotonic()
        try:
            message = self.model.invoke(input, config, **kwargs)
        except Exception as exc:
            self._failed(exc)
            raise
        self._ok(started)
        return self._tag(message)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        started = time.monotonic()
        try:
            message = await self.model.ainvoke(input, config, **kwargs)
        except Exception as exc:
            self._failed(exc)
            raise
        self._ok(started)
        return self._tag(message)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        started, first = time.monotonic(), True
        try:
            async with aclosing(self.model.astream(input, config, **kwargs)) as chunks:
                async for chunk in chunks:
                    if first:  # only the first chunk: merged chunks would concatenate the name
                        self._ok(started)
                        chunk = self._tag(chunk)
                        first = False
                    yield chunk
        except Exception as exc:
            if first:
                self._failed(exc)
            raise


def plan_runnable(plan: Plan, local: BaseChatModel) -> Runnable[Any, BaseMessage]:
    """The plan's providers as one Runnable: the primary with LCEL fallbacks behind it."""
    last = len(plan.chain) - 1
    steps = [ProviderRunnable(p, plan.route, i == last, local) for i, p in enumerate(plan.chain)]
    if len(steps) == 1:
        return steps[0]
    return steps[0].with_fallbacks(steps[1:], exceptions_to_handle=FALLBACK_ON)


class RoutedChatModel(Runnable[Any, BaseMessage]):
    """`model`'s route as a chat model: each call draws a fresh plan (weights) and runs its chain."""

    def __init__(self, model: str | None, local_aliases: list[str], local: BaseChatModel) -> None:
        self.model, self.local_aliases, self.local = model, list(local_aliases), local
        router().plan(model, self.local_aliases)  # unknown names fail here, not on first use

    def _chain(self) -> Runnable[Any, BaseMessage]:
        return plan_runnable(router().plan(self.model, self.local_aliases), self.local)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return self._chain().invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> BaseMessage:
        return await self._chain().ainvoke(input, config, **kwargs)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[BaseMessage]:
        yield from self._chain().stream(input, config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[BaseMessage]:
        async for chunk in self._chain().astream(input, config, **kwargs):
            yield chunk


def chat_model(
    name: str | None, local_aliases: list[str], local: BaseChatModel
) -> Runnable[Any, BaseMessage]:
    """The chat model for a request's `model` (None: the configured default), with `local` as askdb's
    own runner. Raises UnknownModel."""
    return RoutedChatModel(name, local_aliases, local)
