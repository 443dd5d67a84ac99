"""askdb's own wire types, in one place: the bounds on /ask, /generate and /embed requests, their
responses, token usage, and the error body `{"error": {"type", "message", ...}}` (../shared/API.md).

Every askdb-shape error is built by `error_body` / `error_response` below; OpenAI's shape under /v1
has its own type (api/openai_protocol.py). A 503 always says when to come back (`Retry-After`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import BaseModel, ConfigDict, WithJsonSchema
from starlette.responses import JSONResponse

import settings
from api import limits

S = settings.get()
MAX_QUESTION_CHARS = S.max_question_chars
MAX_ROWS = S.max_rows
RETRY_AFTER_S = 5  # a dependency down or busy: come back in about this long

# ---- request fields (BentoML validates them; a bad one is a 400 naming the field) ----------------
Prompt = Annotated[str, MinLen(1), MaxLen(limits.MAX_PROMPT_CHARS)]
NewTokens = Annotated[int, Ge(1), Le(limits.MAX_NEW_TOKENS)]
Temperature = Annotated[float, Ge(0.0), Le(2.0)]
StopList = Annotated[
    list[Annotated[str, MinLen(1), MaxLen(limits.MAX_STOP_CHARS)]], MaxLen(limits.MAX_STOP_STRINGS)
]
Texts = Annotated[
    list[Annotated[str, MaxLen(limits.MAX_EMBED_TEXT_CHARS)]], MinLen(1), MaxLen(limits.MAX_EMBED_TEXTS)
]
DbName = Annotated[str, MinLen(1), MaxLen(64)]
Question = Annotated[str, MinLen(1), MaxLen(MAX_QUESTION_CHARS)]
MaxRows = Annotated[int, Ge(1), Le(MAX_ROWS)]
ModelName = Annotated[str, MaxLen(200)]
# A response field that may be null, published the OpenAPI 3.0 way (`nullable`): BentoML's document
# is 3.0.2, where pydantic's `anyOf: [..., {"type": "null"}]` reads as never null (tests/test_fuzz.py).
NullableFloat = Annotated[float | None, WithJsonSchema({"type": "number", "nullable": True})]


# ---- responses -----------------------------------------------------------------------------------
class Usage(BaseModel):
    """Tokens of one /ask or /generate (all model calls it made)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class GenerateResponse(BaseModel):
    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
    model: str


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dim: int


class AskResponse(BaseModel):
    question: str
    db: str
    sql: str
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    answer: str
    attempts: int
    model: str
    usage: Usage
    latency_ms: float
    request_id: str | None = None
    tables: list[str] = []  # the tables the prompt showed (after selection)
    examples: list[str] = []  # the few-shot questions the prompt showed
    explanation: str = ""  # what the SQL does, in words, from its syntax tree (pipeline/explain.py)
    confidence: NullableFloat = (
        None  # 0..1 from token log-probabilities (pipeline/confidence.py); null for providers without them
    )


# ---- errors --------------------------------------------------------------------------------------
class ErrorInfo(BaseModel):
    """`type` is machine-readable (API.md lists /ask's), `message` says what to do; a route may add
    fields (/ask adds `sql`, the query it refused or that failed, or null)."""

    model_config = ConfigDict(extra="allow")
    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one builder of askdb's error body: `{"error": {"type", "message", **extra}}`."""
    return ErrorBody(error=ErrorInfo(type=kind, message=message, **extra)).model_dump()


def error_response(
    kind: str, message: str, status: int, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The error body as a response (returned, not raised: BentoML would replace a raised 5xx's body)."""
    if status == 503:
        headers = {"retry-after": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse(error_body(kind, message, **extra), status_code=status, headers=headers)
