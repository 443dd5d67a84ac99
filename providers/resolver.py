"""Which model answers a request, decided here and nowhere else; askdb's runners as the service holds them.

`Models` is made once per API worker from the AskDB service's `bentoml.depends` handles (service.py)
and is the one way anything reaches the runners: service routes use `self.models`, the /v1 app the
same object through the current service (api/openai_app.py). A request's `model` is one of:

- askdb's own LLM: no name, `local`, the runner's store tag, its name, or `name:latest`
  (`LocalNames`, built once from the tag). /ask and /v1/completions then call the runner directly;
- a provider or route name (providers/config.py): its chain, fallbacks included (providers/chain.py);
  /v1/chat/completions without a name takes the configured default route;
- anything else: `UnknownModel` (404, listing the names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable

from providers.chain import chat_model, router
from providers.config import LOCAL
from providers.local import RunnerChatModel, RunnerEmbeddings
from providers.routing import Plan
from runners import client as runner_client
from runners.schemas import GenRequest, GenResult, ModelInfo


@dataclass(frozen=True)
class LocalNames:
    """The names of one served model: shown (its tag and name) and accepted (also `local`, name:latest)."""

    tag: str
    listed: tuple[str, ...] = field(init=False)
    accepted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        name = self.tag.split(":", 1)[0]
        object.__setattr__(self, "listed", tuple(dict.fromkeys((self.tag, name))))
        object.__setattr__(self, "accepted", frozenset({*self.listed, f"{name}:latest", LOCAL}))

    def means_local(self, model: str | None) -> bool:
        """No name, or one of this model's names."""
        return not model or model in self.accepted

    def canonical(self, model: str | None) -> str | None:
        """`local` for any of this model's names, so the router sees one spelling."""
        return LOCAL if model and model in self.accepted else model


@dataclass(frozen=True)
class Choice:
    """What a request's `model` resolved to. `local`: askdb's own runner, called directly."""

    model: str | None
    local: bool


class Models:
    """The runner handles, their tags (asked once) and the resolver of a request's `model`."""

    def __init__(self, llm: Any, embedder: Any) -> None:
        self.llm, self.embedder = llm, embedder
        self._llm_names: LocalNames | None = None
        self._embed_info: ModelInfo | None = None
        self._routed_local: RunnerChatModel | None = None  # the runner inside routes, made once

    async def llm_names(self) -> LocalNames:
        if self._llm_names is None:
            self._llm_names = LocalNames(str((await runner_client.call(self.llm.to_async.info)).tag))
        return self._llm_names

    async def llm_tag(self) -> str:
        return (await self.llm_names()).tag

    async def embed_info(self) -> ModelInfo:
        if self._embed_info is None:
            self._embed_info = await runner_client.call(self.embedder.to_async.info)
        return self._embed_info

    async def generate(self, request: GenRequest) -> GenResult:
        """One raw generation on the LLM runner (cancelled there too if the caller is)."""
        return await runner_client.generate(self.llm, request)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return list(await runner_client.call(self.embedder.to_async.embed, texts))

    async def resolve(self, model: str | None) -> Choice:
        """The one decision: askdb's runner, or a provider/route (checked now: UnknownModel if neither)."""
        names = await self.llm_names()
        if names.means_local(model):
            return Choice(model, local=True)
        await self.plan(model)
        return Choice(model, local=False)

    async def plan(self, model: str | None) -> Plan:
        """Which providers answer `model`, in order (no name: the configured default)."""
        names = await self.llm_names()
        return router().plan(names.canonical(model), list(names.listed))

    async def chat_model(self, model: str | None) -> Runnable[Any, BaseMessage]:
        """`model`'s route as a chat model: a fresh weighted draw per call, fallbacks behind it."""
        names = await self.llm_names()
        if self._routed_local is None:
            self._routed_local = self.local_chat_model()
        return chat_model(names.canonical(model), list(names.listed), self._routed_local)

    def local_chat_model(self, **fields: Any) -> RunnerChatModel:
        """The LLM runner as a chat model (`fields`: RunnerChatModel's, e.g. model_name, logprobs)."""
        return RunnerChatModel(runner=self.llm, **fields)

    def embeddings(self) -> RunnerEmbeddings:
        return RunnerEmbeddings(self.embedder)
