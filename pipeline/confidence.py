"""Confidence of an /ask answer, 0..1, from the model's own token probabilities and from how far
self-consistency candidates agree.

(a) Token confidence: the geometric mean of the chosen tokens' probabilities in the reply that
    produced the winning SQL, exp(mean(logprob)). The plain product (the sequence probability)
    falls with every token, so a long correct join would read as less certain than a short wrong
    count; the per-token mean does not depend on length, and one very unlikely token (a guessed
    column name) still pulls it down hard, because it averages logs, not probabilities.
(b) Agreement: with `candidates` > 1, the share of all candidates (failed ones included) whose
    result set is the winner's. Agreement between independently sampled queries is the better
    calibrated of the two signals in the self-consistency literature, and it sees what token
    probabilities cannot: several confident queries that disagree.

confidence = token confidence when there is one candidate; the geometric mean of the two when
there are several (each can veto: near-zero either way gives near zero). Until the LLM runner
returns log-probabilities (`AIMessage.response_metadata["logprobs"]`, a list of floats, one per
generated token; OpenAI's `{"content": [{"logprob": ...}]}` shape is read too) it is None, and
/ask returns `confidence: null`: agreement alone would be a confidence on a different scale, and
a number whose meaning changes when logprobs arrive is worse than none. `python -m eval run`
prints a reliability table (confidence bucket vs accuracy) to check the calibration.

Still under test (issue 17, eval/README.md "Calibration"): whether the top bucket reaches twice
the overall accuracy is not measured yet. `python -m eval calibration REPORT` compares this mean
with the mean and the minimum over the SQL statement's own tokens on an in-process report; the
definition changes only if another one does better on both halves of the set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def logprobs_of(message: Any) -> list[float] | None:
    """The chosen tokens' log-probabilities in a chat model's reply, or None when it has none."""
    meta = getattr(message, "response_metadata", None) or {}
    raw = meta.get("logprobs")
    if isinstance(raw, dict):  # OpenAI / langchain-openai: {"content": [{"token", "logprob", ...}]}
        raw = [t.get("logprob") for t in raw.get("content") or [] if isinstance(t, dict)]
    if not isinstance(raw, list | tuple) or not raw:
        return None
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        return None
    return values if all(math.isfinite(v) and v <= 0.0 for v in values) else None


def token_confidence(logprobs: Sequence[float] | None) -> float | None:
    """exp(mean(logprob)): the geometric-mean probability per generated token."""
    if not logprobs:
        return None
    return math.exp(sum(logprobs) / len(logprobs))


def agreement(keys: Sequence[object | None], winner: object) -> float | None:
    """The share of candidates (None = failed) whose result key equals the winner's; None for one."""
    if len(keys) < 2:
        return None
    return sum(k == winner for k in keys if k is not None) / len(keys)


def confidence(logprobs: Sequence[float] | None, agree: float | None = None) -> float | None:
    token = token_confidence(logprobs)
    if token is None:
        return None
    value = token if agree is None else math.sqrt(token * agree)
    return round(min(1.0, max(0.0, value)), 4)
