"""Provider and route configuration: which endpoints exist, how requests are spread and who backs up.

Read once from `ASKDB_PROVIDERS` (YAML or JSON text) or `ASKDB_PROVIDERS_FILE` (a YAML file path).
Without either, the only provider is `local` (askdb's own LLM runner) and every request goes there.
Keys live in environment variables named by `api_key_env`: the config holds names, never secrets.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

import settings

LOCAL = "local"


class ProviderSpec(BaseModel):
    """One OpenAI-compatible endpoint (`base_url` ends in /v1, as the `openai` client expects)."""

    base_url: str
    model: str
    api_key_env: str | None = None  # the NAME of the variable holding the key
    timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)

    def api_key(self) -> str:
        # the openai client insists on a key; endpoints without auth accept any placeholder
        return os.environ.get(self.api_key_env, "") if self.api_key_env else "not-needed"


class RouteSpec(BaseModel):
    """Where one `model` name goes: a primary picked by weight, then the fallbacks in order."""

    weights: dict[str, float] = Field(min_length=1)
    fallbacks: list[str] | None = None  # default: the other weighted providers, heaviest first

    @field_validator("weights")
    @classmethod
    def _positive(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("route weights must be >= 0 with a positive sum")
        return weights


class ProvidersConfig(BaseModel):
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    default: str = LOCAL

    @model_validator(mode="after")
    def _consistent(self) -> ProvidersConfig:
        if LOCAL in self.providers:
            raise ValueError(f"provider name {LOCAL!r} is reserved for askdb's own runner")
        known = {LOCAL, *self.providers}
        for name, route in self.routes.items():
            if name in known:
                raise ValueError(f"route {name!r} has the same name as a provider")
            for p in [*route.weights, *(route.fallbacks or [])]:
                if p not in known:
                    raise ValueError(f"route {name!r} names unknown provider {p!r}")
        if self.default not in known and self.default not in self.routes:
            raise ValueError(f"default {self.default!r} is neither a provider nor a route")
        return self

    @property
    def names(self) -> list[str]:
        """Every `model` value a request may use to pick a provider or a route."""
        return [LOCAL, *self.providers, *self.routes]


def load(env: dict[str, str] | None = None) -> ProvidersConfig:
    s = settings.load(env)
    text = s.providers
    if not text and s.providers_file:
        text = Path(s.providers_file).read_text()
    if not text:
        return ProvidersConfig()
    return ProvidersConfig.model_validate(yaml.safe_load(text))  # YAML is a superset of JSON
