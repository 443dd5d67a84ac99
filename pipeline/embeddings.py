"""The Embedding runner as LangChain `Embeddings` (dependency handle in the service, HTTP client outside)."""

from __future__ import annotations

from typing import Any

from langchain_core.embeddings import Embeddings

from runners import client as runner_client


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
