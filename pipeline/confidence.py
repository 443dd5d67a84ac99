"""Confidence of an /ask answer, 0..1, from the model's own token probabilities and from how far
self-consistency candidates agree.

(a) Token confidence: the probability of the least likely token inside the SQL statement of the
    reply that produced the winning query, exp(min(logprob)). A query is wrong because of one
    guessed token (a column, a table, a literal, ASC for DESC); the rest of the reply (fences,
    keywords the examples all share) is near-certain and, averaged in, hides that guess: the
    geometric mean over all tokens put 28 of 35 answers above 0.8 at 39% accuracy (ECE 0.51),
    the minimum over the statement's tokens put its highest answers (0.6-0.8) at 86% and cut the
    ECE to 0.15. Measured on 50 Chinook questions, SmolLM2-135M, and on each half
    of the split on its own (eval/README.md "Calibration", `python -m eval calibration REPORT`).
    Where the reply's token texts are unknown (a provider that sends log-probabilities without
    tokens), the minimum is taken over all tokens.
(b) Agreement: with `candidates` > 1, the share of all candidates (failed ones included) whose
    result set is the winner's. Agreement between independently sampled queries is the better
    calibrated of the two signals in the self-consistency literature, and it sees what token
    probabilities cannot: several confident queries that disagree.

confidence = token confidence when there is one candidate; the geometric mean of the two when
there are several (each can veto: near-zero either way gives near zero). Without log-probabilities
(`AIMessage.response_metadata["logprobs"]` in OpenAI's `{"content": [{"token", "logprob"}]}` shape,
which askdb's runner and langchain-openai send; a bare list of floats is read too) it is None, and
/ask returns `confidence: null`: agreement alone would be a confidence on a different scale.
`python -m eval run` prints a reliability table (confidence bucket vs accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def token_logprobs(message: Any) -> list[tuple[str, float]] | None:
    """(token, log-probability) of each chosen token in a chat model's reply, or None when it has
    none; the token is "" where the reply gives bare floats."""
    meta = getattr(message, "response_metadata", None) or {}
    raw = meta.get("logprobs")
    if isinstance(raw, dict):  # OpenAI / langchain-openai / askdb's runner
        content = [t for t in raw.get("content") or [] if isinstance(t, dict)]
        raw = [(t.get("token") or "", t.get("logprob")) for t in content]
    elif isinstance(raw, list | tuple):
        raw = [("", v) for v in raw]
    if not raw:
        return None
    try:
        pairs = [(str(tok), float(lp)) for tok, lp in raw]
    except (TypeError, ValueError):
        return None
    return pairs if all(math.isfinite(lp) and lp <= 0.0 for _, lp in pairs) else None


def statement_logprobs(tokens: Sequence[tuple[str, float]], sql: str | None) -> list[float]:
    """The log-probabilities of the tokens that overlap the SQL statement in the reply (not the
    fences, prose or stop around it); all of them when the statement cannot be located."""
    text = "".join(tok for tok, _ in tokens)
    start = text.find(sql) if sql else -1
    if start < 0:
        return [lp for _, lp in tokens]
    end, pos, out = start + len(sql or ""), 0, []
    for tok, lp in tokens:
        if pos + len(tok) > start and pos < end:
            out.append(lp)
        pos += len(tok)
    return out or [lp for _, lp in tokens]


def token_confidence(logprobs: Sequence[float] | None) -> float | None:
    """exp(min(logprob)): the probability of the least likely token."""
    if not logprobs:
        return None
    return math.exp(min(logprobs))


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
