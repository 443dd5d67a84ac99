"""Confidence (pipeline/confidence.py): read from a chat reply's token log-probabilities, combined
with the candidates' agreement, and null while the model reports none."""

from __future__ import annotations

import math

from langchain_core.messages import AIMessage

from pipeline.confidence import agreement, confidence, logprobs_of, token_confidence


def test_logprobs_are_read_from_the_reply_in_either_shape() -> None:
    runner_shape = AIMessage("SELECT 1", response_metadata={"logprobs": [-0.1, -0.2]})
    openai_shape = AIMessage(
        "SELECT 1", response_metadata={"logprobs": {"content": [{"token": "SELECT", "logprob": -0.1}]}}
    )
    assert logprobs_of(runner_shape) == [-0.1, -0.2]
    assert logprobs_of(openai_shape) == [-0.1]
    for meta in ({}, {"logprobs": None}, {"logprobs": []}, {"logprobs": [0.5]}, {"logprobs": ["x"]}):
        assert logprobs_of(AIMessage("x", response_metadata=meta)) is None  # absent or not logprobs


def test_token_confidence_is_the_geometric_mean_probability() -> None:
    assert token_confidence([math.log(0.5), math.log(0.5)]) == 0.5
    # length does not lower it, one unlikely token does
    assert token_confidence([math.log(0.9)] * 40) == token_confidence([math.log(0.9)] * 4)
    assert token_confidence([math.log(0.9)] * 9 + [math.log(0.001)]) < 0.5
    assert token_confidence(None) is None and token_confidence([]) is None


def test_agreement_and_the_combination() -> None:
    assert agreement(["a", "a", "b", None], "a") == 0.5  # failed candidates count against
    assert agreement(["a"], "a") is None
    assert confidence([math.log(0.64)]) == 0.64
    assert confidence([math.log(0.64)], 0.25) == 0.4  # sqrt(0.64 * 0.25)
    assert confidence([math.log(0.9)], 0.0) == 0.0  # either signal can veto
    assert confidence(None, 1.0) is None  # no logprobs yet: null, whatever the agreement
