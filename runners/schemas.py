"""Request and result types the runners batch over; the service and the OpenAI layer reuse them."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from runners.tenancy import Tenant, current

MIN_TEMPERATURE = 1e-4  # below this, sampling is greedy decoding


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    # an assistant turn's calls ({"name", "arguments": dict}) and a tool turn's answer to one
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class GenRequest(BaseModel):
    """One generation request; a batch holds many, each with its own parameters."""

    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    ignore_eos: bool = False  # benchmarks: generate exactly max_new_tokens
    # Lark grammar (llguidance syntax) the reply must follow; an invalid one fails this request only
    grammar: str | None = Field(None, max_length=200_000)
    # log-probabilities of each generated token, and of this many most likely alternatives (0-20)
    logprobs: int | None = Field(None, ge=0, le=20)
    # functions the chat template offers the model ({"name", "description", "parameters"}),
    # rendered by runners/chat_format.py; None: no tools
    tools: list[dict[str, Any]] | None = None
    # requests with the same group and prompt (the n choices of one OpenAI call) prefill it once:
    # later ones copy the first one's KV cache (runners/fanout.py)
    prefix_group: str | None = Field(None, max_length=64)
    # set where the request is made (client clock), so the runner can measure queue wait
    submitted_at: float | None = Field(default_factory=time.time)
    # names the row for `cancel` (a client that left); made by the caller, unique per request
    id: str = Field(default_factory=lambda: uuid.uuid4().hex, max_length=64)
    # whose request it is, for the engine's fair share (runners/admission.py); set where it is made
    tenant: Tenant = Field(default_factory=current)

    @field_validator("temperature")
    @classmethod
    def _greedy_below_floor(cls, value: float) -> float:
        # logits / 1e-136 overflow to inf and sampling then fails on NaN (found by tests/test_fuzz.py);
        # at such temperatures sampling is the argmax anyway.
        return 0.0 if value < MIN_TEMPERATURE else value


FinishReason = Literal["stop", "length", "error", "cancelled"]
# Why a request failed, for the caller to pick the status: invalid (400), queue_full (503 + Retry-After)
ErrorCode = Literal["invalid", "queue_full", "internal"]


class TokenLogprob(BaseModel):
    token: str  # the token's text as the tokenizer decodes it alone
    logprob: float
    top: list[tuple[str, float]] = Field(default_factory=list)  # most likely alternatives, best first


class StreamEvent(BaseModel):
    """One streamed piece: a text delta and the token counts so far; the last has finish_reason."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    code: ErrorCode | None = None
    logprobs: list[TokenLogprob] | None = None  # for the tokens behind this delta, when asked


class GenResult(BaseModel):
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # set, with finish_reason "error", when this request alone was rejected
    code: ErrorCode | None = None
    logprobs: list[TokenLogprob] | None = None


class ModelInfo(BaseModel):
    tag: str
    task: str
    architecture: str
    device: str
    dtype: str
    context_length: int
    max_batch_size: int  # rows decoded together at most (the LLM runner's slots)
    dim: int | None = None
    scheduler: str | None = None  # LLM runner: "continuous" (one engine, runners/engine.py)
    max_context: int | None = None  # LLM runner: positions per slot (prompt + new tokens)
