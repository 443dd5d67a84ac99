"""What the AskDB service adds to BentoML's `/metrics` and its `/feedback` request type.

`askdb_runner_up{runner}` is computed when Prometheus scrapes: the API service asks each runner's
readiness endpoint (BentoML's own probe, short timeout). A dead or hung runner reads 0 at once,
which a value written by the runner itself could not say once its process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from annotated_types import Ge, Le, MaxLen
from pydantic import BaseModel, StringConstraints, WithJsonSchema

import settings

PROBE_TIMEOUT_S = settings.get().runner_probe_timeout_s  # under a scrape timeout

RequestId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Score = Annotated[float, Ge(0.0), Le(1.0)]
Comment = Annotated[str, MaxLen(2000)]


class FeedbackResponse(BaseModel):
    request_id: str
    score: float
    recorded: bool  # false when the quality log is turned off (the metric still counts it)
    # set when `sql` proposed an example (pipeline/example_store.py); `nullable` is OpenAPI 3.0's null
    proposal_id: Annotated[str | None, WithJsonSchema({"type": "string", "nullable": True})] = None


async def _ready(proxy: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(await proxy.is_ready(PROBE_TIMEOUT_S))
    return False


async def runner_up_text(runners: dict[str, Any]) -> str:
    """Prometheus text for `askdb_runner_up`, one sample per runner name -> dependency proxy."""
    names = list(runners)
    states = await asyncio.gather(*(_ready(runners[n]) for n in names))
    lines = [
        "# HELP askdb_runner_up Whether the runner answered its readiness probe (1) or not (0)",
        "# TYPE askdb_runner_up gauge",
    ]
    lines += [f'askdb_runner_up{{runner="{n}"}} {int(up)}' for n, up in zip(names, states, strict=True)]
    return "\n".join(lines) + "\n"
