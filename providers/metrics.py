"""Provider metrics (prometheus_client; BentoML serves them on /metrics, see observability/metrics.py).

Labels come from configuration (provider and route names) and fixed sets, never from request text.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

requests = Counter(
    "askdb_provider_requests",
    "Chat requests answered or failed, by provider",
    ["provider", "route", "outcome"],
)
fallbacks = Counter(
    "askdb_provider_fallbacks",
    "Requests a provider failed and the next in the chain took",
    ["provider", "route"],
)
latency = Histogram(
    "askdb_provider_latency_seconds",
    "Time to a provider's answer (first chunk when streaming)",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def failure_kind(exc: BaseException) -> str:
    """A bounded label for why a provider failed."""
    name = type(exc).__name__
    for kind in ("Timeout", "RateLimit", "Connection", "InternalServer"):
        if kind in name:
            return kind.lower()
    return "error"
