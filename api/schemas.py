"""Response bodies of /generate and /embed, as in ../shared/API.md."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    text: str
    finish_reason: Literal["stop", "length"]
    usage: Usage
    model: str


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dim: int
