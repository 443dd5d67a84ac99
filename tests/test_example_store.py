"""Verified examples (pipeline/example_store.py) and the bank that reads them (pipeline/chain.py),
over the real stored embedding model in this process: proposals are validated and never retrieved;
an approval made by another process joins the bank at the next question, without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest

from eval import scorer
from eval.inprocess import Engine as InProcess
from eval.poison import malicious
from models.defaults import DEFAULT_EMBED_TAG
from pipeline import databases, examples, schema
from pipeline.chain import TextToSQL
from pipeline.example_store import ExampleStore, ProposalError
from providers.local import RunnerEmbeddings
from runners.embedding_engine import Embedder
from tests.servers import ROOT


@pytest.fixture(scope="module")
def embeddings() -> RunnerEmbeddings:
    return RunnerEmbeddings(InProcess(Embedder.load(bentoml.models.get(DEFAULT_EMBED_TAG).path)))


def test_a_proposal_must_pass_the_guard_and_name_its_question(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path)
    for sql, why in [
        ("DELETE FROM Artist", "DELETE"),
        ("SELECT 1; DROP TABLE Album", "statement"),
        ("SELECT * FROM sqlite_master", "system table"),
        ("SELEC x FRM", "sql"),
    ]:
        with pytest.raises(ProposalError, match="field 'sql'") as err:
            store.propose("chinook", "q", sql, "sqlite")
        assert why in str(err.value) and err.value.status == 400
    with pytest.raises(ProposalError, match="field 'question'"):
        store.propose("chinook", "  ", "SELECT 1", "sqlite")
    with pytest.raises(ProposalError, match="not valid"):
        store.propose("../etc", "q", "SELECT 1", "sqlite")  # the database name becomes a folder
    assert store.proposals("chinook") == [] and not (tmp_path / "chinook" / "approved.yaml").exists()


def test_decisions(tmp_path: Path) -> None:
    store = ExampleStore(tmp_path)
    a = store.propose("chinook", "How many genres?", "SELECT COUNT(*) FROM Genre", "sqlite", key="k")
    b = store.propose("chinook", "How many media types?", "SELECT COUNT(*) FROM MediaType", "sqlite")
    assert [p.id for p in store.proposals("chinook")] == [a.id, b.id]
    assert store.decide("chinook", a.id, True, "admin", "sqlite").status == "approved"
    assert store.decide("chinook", b.id, False, "admin", "sqlite").status == "rejected"
    assert store.proposals("chinook") == []
    assert [p.status for p in store.proposals("chinook", None)] == ["approved", "rejected"]
    assert [e.question for e in store.approved("chinook")] == ["How many genres?"]
    for pid, status in [(a.id, 409), ("nope", 404)]:
        with pytest.raises(ProposalError) as err:
            store.decide("chinook", pid, True, "admin", "sqlite")
        assert err.value.status == status


async def test_only_approved_examples_are_ever_retrieved(
    tmp_path: Path, embeddings: RunnerEmbeddings
) -> None:
    db = databases.get("chinook")
    info = schema.describe(db)
    store = ExampleStore(tmp_path)
    steps = TextToSQL(llm=None, embeddings=embeddings, store=store)  # type: ignore[arg-type]  # no LLM needed
    probes = scorer.load_testset()[:12]

    async def retrieved(question: str) -> list[str]:
        vec = await embeddings.aembed_query(question)
        return [e.question for e in await steps.bank(db, info).nearest(question, vec, 3, 0.7)]

    before = {p["question"]: await retrieved(p["question"]) for p in probes}
    stored = []
    for item in malicious(probes, 50):
        try:
            stored.append(store.propose("chinook", item["question"], item["sql"], "sqlite", key="mallory"))
        except ProposalError:
            continue  # the writes are turned away
    assert len(stored) >= 30
    after = {p["question"]: await retrieved(p["question"]) for p in probes}
    assert after == before  # 50 proposals, several with the very question asked: nothing moved
    proposed = {p.question for p in stored}
    assert not proposed & {q for shown in after.values() for q in shown}

    # approved by `askdb examples review` in a process of its own: the next lookup sees it
    target = probes[0]["question"]
    wanted = next(p for p in stored if p.question == target)
    env = {
        **os.environ,
        "ASKDB_EXAMPLE_STORE": str(tmp_path),
        "ASKDB_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    }
    cmd = [sys.executable, str(ROOT / "askdb_cli.py"), "examples", "review", "approve", wanted.id]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (await retrieved(target))[-1] == target  # closest last, as the prompt shows it
    others = [q for q in proposed if q != target]
    assert not set(others) & {q for p in probes[1:] for q in await retrieved(p["question"])}


async def test_approved_examples_get_places_of_their_own(embeddings: RunnerEmbeddings) -> None:
    """The static bank has a same-shape example for most questions, so an approved pair of the
    same shape would tie with it and lose; it is shown on top of the k nearest instead."""
    static = examples.load_bank("chinook")
    words = examples.vocabulary(
        [(t.name, [c.name for c in t.columns]) for t in schema.describe(databases.get("chinook")).tables]
    )
    question = "How many invoices are there?"
    vec = await embeddings.aembed_query(question)
    plain = await examples.ExampleBank(static, embeddings, words).nearest(question, vec, 3, 0.7)
    approved = [
        examples.Example(
            "How many invoices were issued in 2009?",
            "SELECT COUNT(*) FROM Invoice WHERE strftime('%Y', InvoiceDate) = '2009'",
            verified=True,
        ),
        examples.Example(
            "Which albums have more than 25 tracks?",
            "SELECT AlbumId FROM Track GROUP BY AlbumId HAVING COUNT(*) > 25",
            verified=True,
        ),
        examples.Example(
            "What is the shortest track?",
            "SELECT Name FROM Track ORDER BY Milliseconds LIMIT 1",
            verified=True,
        ),
    ]
    bank = examples.ExampleBank(static + approved, embeddings, words)
    scored = await bank.nearest(question, vec, 3, 0.7)
    assert len(plain) == 3 and not any(e.verified for e in plain)
    assert set(plain) <= set(scored)  # the k nearest stay: approved examples are added, not swapped in
    shown = [e for e in scored if e.verified]
    assert len(shown) == examples.VERIFIED_SLOTS == len(scored) - 3
    assert shown[-1].question == "How many invoices were issued in 2009?"  # the closer of the approved
    assert await bank.nearest(question, vec, 0, 0.7) == []  # `examples: 0` still shows none
    none_extra = examples.ExampleBank(static + approved, embeddings, words, verified_slots=0)
    assert len(await none_extra.nearest(question, vec, 3, 0.7)) == 3
