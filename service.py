"""askdb: the one service users talk to. It composes one runner per model (each scales on its own).

Serve with `bentoml serve` (the entry is named in bentofile.yaml) or `bentoml serve service:AskDB`.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from annotated_types import Ge, Le, MaxLen, MinLen
from bentoml.exceptions import InvalidArgument
from pydantic import Field

from api import limits
from api.schemas import EmbedResponse, GenerateResponse, Usage
from runners.embedding import Embedding
from runners.llm import LLM
from runners.schemas import GenRequest

Prompt = Annotated[str, MinLen(1), MaxLen(limits.MAX_PROMPT_CHARS)]
NewTokens = Annotated[int, Ge(1), Le(limits.MAX_NEW_TOKENS)]
Temperature = Annotated[float, Ge(0.0), Le(2.0)]
StopList = Annotated[
    list[Annotated[str, MinLen(1), MaxLen(limits.MAX_STOP_CHARS)]], MaxLen(limits.MAX_STOP_STRINGS)
]
Texts = Annotated[
    list[Annotated[str, MaxLen(limits.MAX_EMBED_TEXT_CHARS)]], MinLen(1), MaxLen(limits.MAX_EMBED_TEXTS)
]


@bentoml.service(
    name="askdb",
    traffic={"timeout": limits.REQUEST_TIMEOUT_S},
    labels={"component": "api", "owner": "askdb"},
)
class AskDB:
    llm = bentoml.depends(LLM)
    embedder = bentoml.depends(Embedding)

    def __init__(self) -> None:
        self._llm_tag: str | None = None
        self._embed_info: tuple[str, int] | None = None

    async def llm_tag(self) -> str:
        if self._llm_tag is None:
            self._llm_tag = (await self.llm.to_async.info()).tag
        return self._llm_tag

    async def complete(self, request: GenRequest) -> GenerateResponse:
        """One generation through the LLM runner's batch queue; per-request errors become 400s."""
        [result] = await self.llm.to_async.generate([request])
        if result.finish_reason == "error":
            raise InvalidArgument(result.error or "generation request rejected")
        usage = Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            total_tokens=result.prompt_tokens + result.completion_tokens,
        )
        return GenerateResponse(
            text=result.text,
            finish_reason=result.finish_reason,
            usage=usage,
            model=await self.llm_tag(),
        )

    @bentoml.api
    async def generate(
        self,
        prompt: Prompt,
        max_new_tokens: NewTokens = 128,
        temperature: Temperature = 0.0,
        stop: StopList = Field(default_factory=list),
    ) -> GenerateResponse:
        """Raw completion of `prompt` by the served LLM (no chat template)."""
        return await self.complete(
            GenRequest(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)
        )

    @bentoml.api
    async def embed(self, texts: Texts) -> EmbedResponse:
        """Normalised sentence embeddings, one per text."""
        vectors = await self.embedder.to_async.embed(texts)
        if self._embed_info is None:
            info = await self.embedder.to_async.info()
            self._embed_info = (info.tag, info.dim or len(vectors[0]))
        tag, dim = self._embed_info
        return EmbedResponse(embeddings=vectors, model=tag, dim=dim)
