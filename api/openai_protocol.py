"""The OpenAI wire types of /v1, in one place: request bodies, responses, stream chunks, usage, errors.

Requests are validated field by field (a bad one is a 400 naming the field, api/openai_errors.py);
unknown fields are ignored as OpenAI's own server ignores fields it does not know, but fields that
would silently change the answer (echo, suffix, best_of, functions) are a 400 naming them. Routes
return the response types below (as vLLM's entrypoints/openai/protocol.py does), so the shape on the
wire is the one written here. `provider` is askdb's addition (who answered); nothing else is.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api import limits

Text = Annotated[str, MaxLen(limits.MAX_PROMPT_CHARS)]
Stop = Annotated[str, MinLen(1), MaxLen(limits.MAX_STOP_CHARS)]
MAX_MESSAGES = 256
MAX_TOOLS = 128
MAX_CHOICES = 16  # n: each choice is an engine row, so a bound keeps one request from taking all
TOP_LOGPROBS = 20  # OpenAI's bound; the engine computes exactly this many (runners/sampling.py)
# torch seeds are 64-bit: a seed past that failed the runner's whole batch (503 for every request in it)
Seed = Annotated[int, Ge(-(2**63)), Le(2**63 - 1)]
MAX_DIMENSIONS = 65_536  # more than any embedding model has; a bound keeps the field a plain number
DEFAULT_MAX_TOKENS = min(256, limits.MAX_NEW_TOKENS)  # a default within the configured cap
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


# ---- requests -----------------------------------------------------------------------------------
class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(BaseModel):
    id: str = Field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart], MaxLen(64)] | None = None
    name: str | None = None
    tool_calls: Annotated[list[ToolCall], MaxLen(MAX_TOOLS)] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns: the call this result answers

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class FunctionDef(BaseModel):
    name: Annotated[str, MinLen(1), MaxLen(64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; None: no arguments
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedTool(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    name: Annotated[str, MaxLen(64)] = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(populate_by_name=True)


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format: type json_schema needs a json_schema object")
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Stop | Annotated[list[Stop], MaxLen(limits.MAX_STOP_STRINGS)] | None = None
    seed: Seed | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension (extra_body): generate exactly max_tokens (benchmarks)
    response_format: ResponseFormat | None = None

    UNSUPPORTED: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        """400 for fields askdb cannot honour, rather than silently answering something else."""
        if isinstance(data, dict):
            for name, why in cls.UNSUPPORTED.items():
                if data.get(name):  # present and set: echo=false is harmless
                    raise ValueError(f"{name}: {why}")
        return data

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def structured(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[Message], MinLen(1), MaxLen(MAX_MESSAGES)]
    max_tokens: int | None = Field(None, ge=1, le=limits.MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=limits.MAX_NEW_TOKENS)
    tools: Annotated[list[Tool], MaxLen(MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS)

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "functions": "the deprecated functions field is not supported: send tools",
        "function_call": "the deprecated function_call field is not supported: send tool_choice",
    }

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_shape(cls, tools: Any) -> Any:
        # one message for a malformed tool, naming `tools`: pydantic's would name tools[0].function.name
        for i, tool in enumerate(tools or []):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise ValueError(f"tools[{i}] needs {{'type': 'function', 'function': {{'name': ...}}}}")
        return tools

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tools: function names must be unique")
        if isinstance(self.tool_choice, NamedTool) and self.tool_choice.function.name not in names:
            raise ValueError(
                f"tool_choice: no tool named {self.tool_choice.function.name!r} in tools ({names or 'none'})"
            )
        if self.tool_choice == "required" and not names:
            raise ValueError("tool_choice: 'required' needs at least one tool in tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs=true")
        return self

    def budget(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    def choice(self) -> str:
        """none, auto, required, or the named function's name."""
        if isinstance(self.tool_choice, NamedTool):
            return self.tool_choice.function.name
        return self.tool_choice or ("auto" if self.tools else "none")

    def calls_tools(self) -> bool:
        return bool(self.tools) and self.choice() != "none"

    def wanted_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def needs_engine(self) -> bool:
        """Fields only askdb's own engine serves (grammar, tool prompts, log-probabilities, n)."""
        history = any(m.role == "tool" or m.tool_calls for m in self.messages)
        return self.structured() or bool(self.tools) or self.logprobs or self.n > 1 or history


class CompletionRequest(_Sampling):
    prompt: Text | Annotated[list[Text], MinLen(1), MaxLen(1)]
    # OpenAI's default for completions, within the configured cap
    max_tokens: int = Field(min(16, limits.MAX_NEW_TOKENS), ge=1, le=limits.MAX_NEW_TOKENS)
    logprobs: int | None = Field(None, ge=0, le=TOP_LOGPROBS)  # here a count of alternatives

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "echo": "echo is not supported",
        "suffix": "suffix (insertion) is not supported",
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


# ---- responses ----------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


def _stamp() -> int:
    return int(time.time())


class _Reply(BaseModel):
    id: str
    created: int = Field(default_factory=_stamp)
    model: str
    provider: str = "local"


class ChatCompletion(_Reply):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCall | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Reply):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(_Reply):
    """A text completion, and (with finish_reason null until the last) each of its stream chunks."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_stamp)
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo

    @classmethod
    def body(cls, message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
        """The one builder of OpenAI's error body (api/openai_errors.py picks `type` by status)."""
        return cls(error=ErrorInfo(message=message, type=type, param=param, code=code)).model_dump()
