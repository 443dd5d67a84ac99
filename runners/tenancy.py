"""Which tenant a generation is for: the API key's name, weight and row cap, carried to the engine.

The service's access middleware (api/access.py) sets the caller here for the duration of a request;
every GenRequest built while it runs picks it up (runners/schemas.py: a default factory), so the
tenant reaches the LLM runner's /generate and /stream without each call site passing it along.
ContextVars follow asyncio tasks and `asyncio.to_thread`, so LangChain steps see it too.
"""

from __future__ import annotations

from contextvars import ContextVar

from pydantic import BaseModel, Field

ANONYMOUS = "anonymous"  # unauthenticated traffic (auth off) is one tenant


class Tenant(BaseModel):
    name: str = Field(ANONYMOUS, min_length=1, max_length=64)
    # share of the engine's tokens when rows are scarce, relative to the other tenants waiting
    weight: float = Field(1.0, gt=0.0, le=1000.0)
    # rows (engine slots) this tenant may hold at once; None: as many as are free
    max_rows: int | None = Field(None, ge=1)


_current: ContextVar[Tenant | None] = ContextVar("askdb_tenant", default=None)


def current() -> Tenant:
    """The tenant of the request being served (anonymous outside one)."""
    return _current.get() or Tenant()


def enter(tenant: Tenant) -> None:
    """For the rest of this request's context (its tasks and threads included)."""
    _current.set(tenant)
