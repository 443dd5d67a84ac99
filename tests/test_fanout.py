"""n choices of one prompt in-process (runners/fanout.py): the prompt is prefilled once and the other
rows copy its KV cache, yet every row gives exactly what it gives alone, greedy or seeded."""

from __future__ import annotations

import bentoml
import pytest
from prometheus_client import REGISTRY

from models.defaults import DEFAULT_LLM_TAG
from runners.engine import Engine
from runners.model import LoadedModel
from runners.schemas import GenRequest

PROMPT = "Once upon a time, in a small village by the sea, there lived a fisherman who"
SHARED = "askdb_llm_prefill_shared_tokens_total"


@pytest.fixture(scope="module")
def engine() -> Engine:
    lm = LoadedModel.load(bentoml.models.get(DEFAULT_LLM_TAG).path)
    # a small chunk: the leader's prompt takes several iterations, so followers really wait
    return Engine(lm, slots=6, context=512, prefill_chunk=8)


def _shared() -> float:
    return REGISTRY.get_sample_value(SHARED) or 0.0


def _rows(n: int, group: str | None, **kw: object) -> list[GenRequest]:
    seeds = [None if kw.get("seed") is None else int(kw["seed"]) + i for i in range(n)]  # type: ignore[call-overload]
    params = {k: v for k, v in kw.items() if k != "seed"}
    return [GenRequest(prompt=PROMPT, prefix_group=group, seed=s, **params) for s in seeds]  # type: ignore[arg-type]


def test_seeded_choices_equal_their_lone_runs_and_share_the_prefill(engine: Engine) -> None:
    tokens = len(engine.lm.encode(GenRequest(prompt=PROMPT)))
    args = {"max_new_tokens": 12, "temperature": 1.0, "seed": 11, "ignore_eos": True}
    before = _shared()
    grouped = engine.run(_rows(4, "g1", **args), timeout=300)
    assert _shared() - before == 3 * (tokens - 1)  # three rows copied the prompt but its last token
    alone = [engine.run([r], timeout=300)[0] for r in _rows(4, None, **args)]
    assert [g.text for g in grouped] == [a.text for a in alone]
    assert len({g.text for g in grouped}) > 1  # own seeds: the choices differ


def test_greedy_choices_are_identical_and_match_a_lone_row(engine: Engine) -> None:
    grouped = engine.run(_rows(3, "g2", max_new_tokens=10, ignore_eos=True), timeout=300)
    [alone] = engine.run(_rows(1, None, max_new_tokens=10, ignore_eos=True), timeout=300)
    assert {g.text for g in grouped} == {alone.text}


def test_a_follower_whose_leader_leaves_prefills_on_its_own(engine: Engine) -> None:
    # the leader ends with its first token, in the iteration that prefills its prompt's end:
    # followers still waiting then find no leader and prefill their prompts themselves
    lead, *rest = _rows(3, "g3", max_new_tokens=6, ignore_eos=True)
    lead.max_new_tokens = 1
    results = engine.run([lead, *rest], timeout=300)
    [alone] = engine.run(_rows(1, None, max_new_tokens=6, ignore_eos=True), timeout=300)
    assert [r.text for r in results[1:]] == [alone.text, alone.text]
    assert alone.text.startswith(results[0].text)
