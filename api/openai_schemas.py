"""Request bodies of the OpenAI-compatible API (/v1), validated field by field.

Only what askdb honours is accepted with meaning; unknown fields are ignored as OpenAI's own server
ignores fields it does not know, but fields that would silently change the answer (n > 1, logprobs,
tools, echo, suffix) are rejected with a 400 naming them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api import limits

Text = Annotated[str, MaxLen(limits.MAX_PROMPT_CHARS)]
Stop = Annotated[str, MinLen(1), MaxLen(limits.MAX_STOP_CHARS)]
MAX_MESSAGES = 256
# torch seeds are 64-bit: a seed past that failed the runner's whole batch (503 for every request in it)
Seed = Annotated[int, Ge(-(2**63)), Le(2**63 - 1)]
MAX_DIMENSIONS = 65_536  # more than any embedding model has; a bound keeps the field a plain number
DEFAULT_MAX_TOKENS = min(256, limits.MAX_NEW_TOKENS)  # a default within the configured cap


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[TextPart], MaxLen(64)] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Stop | Annotated[list[Stop], MaxLen(limits.MAX_STOP_STRINGS)] | None = None
    seed: Seed | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension (extra_body): generate exactly max_tokens (benchmarks)

    UNSUPPORTED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        """400 for fields askdb cannot honour, rather than silently answering something else."""
        if isinstance(data, dict):
            for name, why in cls.UNSUPPORTED.items():
                if data.get(name):  # present and set: tools=[] or logprobs=false are harmless
                    raise ValueError(f"{name}: {why}")
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported: ask again for more choices")
        return n

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[Message], MinLen(1), MaxLen(MAX_MESSAGES)]
    max_tokens: int | None = Field(None, ge=1, le=limits.MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=limits.MAX_NEW_TOKENS)

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "tools": "tool calling is not supported",
        "functions": "function calling is not supported",
        "logprobs": "log probabilities are not supported",
        "response_format": "structured output is not supported",
    }

    def budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class CompletionRequest(_Sampling):
    prompt: Text | Annotated[list[Text], MinLen(1), MaxLen(1)]
    # OpenAI's default for completions, within the configured cap
    max_tokens: int = Field(min(16, limits.MAX_NEW_TOKENS), ge=1, le=limits.MAX_NEW_TOKENS)

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "echo": "echo is not supported",
        "suffix": "suffix (insertion) is not supported",
        "logprobs": "log probabilities are not supported",
        "best_of": "best_of is not supported",
    }

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


EmbedText = Annotated[str, MaxLen(limits.MAX_EMBED_TEXT_CHARS)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: EmbedText | Annotated[list[EmbedText], MinLen(1), MaxLen(limits.MAX_EMBED_TEXTS)]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=MAX_DIMENSIONS)
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _token_ids(cls, data: Any) -> Any:
        raw = data.get("input") if isinstance(data, dict) else None
        if isinstance(raw, list) and raw and not isinstance(raw[0], str):
            raise ValueError(
                "input: token-id arrays are not supported, send text "
                "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))"
            )
        return data

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
