"""Request and result types the runners batch over; the service and the OpenAI layer reuse them."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field, field_validator

MIN_TEMPERATURE = 1e-4  # below this, sampling is greedy decoding


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


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
    # set where the request is made (client clock), so the runner can measure queue wait
    submitted_at: float | None = Field(default_factory=time.time)

    @field_validator("temperature")
    @classmethod
    def _greedy_below_floor(cls, value: float) -> float:
        # logits / 1e-136 overflow to inf and sampling then fails on NaN (found by tests/test_fuzz.py);
        # at such temperatures sampling is the argmax anyway.
        return 0.0 if value < MIN_TEMPERATURE else value


class GenResult(BaseModel):
    text: str
    finish_reason: Literal["stop", "length", "error"]
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # set, with finish_reason "error", when this request alone was rejected


class ModelInfo(BaseModel):
    tag: str
    task: str
    architecture: str
    device: str
    dtype: str
    context_length: int
    max_batch_size: int  # rows decoded together at most (open streams under "continuous")
    dim: int | None = None
    scheduler: str | None = None  # LLM runner: "batch" or "continuous" (runners/config.py)
