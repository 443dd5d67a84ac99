"""Routing: a request's `model` names a provider, a route or the served model; a route picks its
primary by weight per request and lists who backs it up."""

from __future__ import annotations

import random
from dataclasses import dataclass

from providers.config import LOCAL, ProvidersConfig


class UnknownModel(LookupError):
    """No provider, route or served model has this name (the OpenAI API answers 404)."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"model {name!r} does not exist; available: {', '.join(known)}")
        self.name = name


@dataclass(frozen=True)
class Plan:
    route: str  # the route (or provider) name the request resolved to, for metrics
    chain: tuple[str, ...]  # providers in the order they are tried


class Router:
    def __init__(self, config: ProvidersConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.rng = rng or random.Random()

    def names(self, local_aliases: list[str] = ()) -> list[str]:  # type: ignore[assignment]
        return [*self.config.names, *local_aliases]

    def plan(self, model: str | None, local_aliases: list[str] = ()) -> Plan:  # type: ignore[assignment]
        """Which providers answer `model` and in which order (a fresh weighted draw each call)."""
        name = model or self.config.default
        if name in local_aliases:
            name = LOCAL
        if name in self.config.routes:
            return Plan(name, self._route_chain(name))
        if name == LOCAL or name in self.config.providers:
            # a provider asked by name still has the default route's backups behind it
            backups = (
                self._route_chain(self.config.default) if self.config.default in self.config.routes else ()
            )
            return Plan(name, (name, *(p for p in backups if p != name)))
        raise UnknownModel(name, self.names(local_aliases))

    def _route_chain(self, route_name: str) -> tuple[str, ...]:
        route = self.config.routes[route_name]
        names = [p for p, w in route.weights.items() if w > 0]
        primary = self.rng.choices(names, weights=[route.weights[p] for p in names])[0]
        if route.fallbacks is None:
            backups = sorted((p for p in names if p != primary), key=lambda p: -route.weights[p])
        else:
            backups = [p for p in route.fallbacks if p != primary]
        return (primary, *dict.fromkeys(backups))
