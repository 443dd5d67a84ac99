"""LLM providers: askdb's own runner (`local`) and OpenAI-compatible endpoints, routed by `model`
with weights and LCEL fallbacks; `Models` (resolver.py) decides which one answers. See providers/README.md."""

from providers.chain import PROVIDER_KEY, chat_model, router
from providers.config import LOCAL, ProvidersConfig, ProviderSpec, RouteSpec
from providers.resolver import Choice, LocalNames, Models
from providers.routing import Plan, Router, UnknownModel

__all__ = [
    "LOCAL",
    "PROVIDER_KEY",
    "Choice",
    "LocalNames",
    "Models",
    "Plan",
    "ProviderSpec",
    "ProvidersConfig",
    "RouteSpec",
    "Router",
    "UnknownModel",
    "chat_model",
    "router",
]
