"""Confidence (pipeline/confidence.py): read from the log-probabilities of the SQL statement's tokens
in a chat reply, combined with the candidates' agreement, and null while the model reports none."""

from __future__ import annotations

import math

from langchain_core.messages import AIMessage

from pipeline.confidence import agreement, confidence, statement_logprobs, token_confidence, token_logprobs


def test_logprobs_are_read_from_the_reply_in_either_shape() -> None:
    bare = AIMessage("SELECT 1", response_metadata={"logprobs": [-0.1, -0.2]})
    openai_shape = AIMessage(
        "SELECT 1", response_metadata={"logprobs": {"content": [{"token": "SELECT", "logprob": -0.1}]}}
    )
    assert token_logprobs(bare) == [("", -0.1), ("", -0.2)]
    assert token_logprobs(openai_shape) == [("SELECT", -0.1)]
    for meta in ({}, {"logprobs": None}, {"logprobs": []}, {"logprobs": [0.5]}, {"logprobs": ["x"]}):
        assert token_logprobs(AIMessage("x", response_metadata=meta)) is None  # absent or not logprobs


def test_only_the_statements_tokens_count() -> None:
    reply = [("```sql\n", -2.0), ("SELECT", -0.1), (" Name", -0.7), (" FROM Artist", -0.2), ("\n```", -3.0)]
    assert statement_logprobs(reply, "SELECT Name FROM Artist") == [-0.1, -0.7, -0.2]  # not the fences
    assert statement_logprobs(reply, "SELECT 1") == [lp for _, lp in reply]  # not located: all tokens
    assert statement_logprobs([("", -0.1), ("", -0.3)], "SELECT 1") == [-0.1, -0.3]  # bare floats


def test_token_confidence_is_the_least_likely_token() -> None:
    assert token_confidence([math.log(0.5), math.log(0.9)]) == 0.5
    # length does not lower it, one unlikely token (a guessed column) does, however many sure ones
    assert token_confidence([math.log(0.9)] * 40) == token_confidence([math.log(0.9)] * 4)
    assert token_confidence([math.log(0.99)] * 99 + [math.log(0.2)]) == 0.2
    assert token_confidence(None) is None and token_confidence([]) is None


def test_agreement_and_the_combination() -> None:
    assert agreement(["a", "a", "b", None], "a") == 0.5  # failed candidates count against
    assert agreement(["a"], "a") is None
    assert confidence([math.log(0.64)]) == 0.64
    assert confidence([math.log(0.64)], 0.25) == 0.4  # sqrt(0.64 * 0.25)
    assert confidence([math.log(0.9)], 0.0) == 0.0  # either signal can veto
    assert confidence(None, 1.0) is None  # no logprobs yet: null, whatever the agreement
