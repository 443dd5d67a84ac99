"""What would the prompts show? The examples step alone (embeddings, no LLM), over `learn` splits.

For each seed, the training half's gold pairs join the static bank as approved examples, and for
every test question the examples the prompt would show are retrieved as /ask does. Reported per
seed: how many test prompts show an approved example, and how many show an example with the gold
query's structure (`structure`: the SQL with literals, columns and tables masked) last, where the
model copies it from. A minute on a CPU where `learn` takes an hour: a quick check of a retrieval
change before the LLM runs, not a substitute for them.

    python -m eval retrieval --seeds 0 1 2 3
"""

from __future__ import annotations

import asyncio

import sqlglot
from sqlglot import exp

from eval import learning, scorer
from pipeline import databases, examples, schema


def structure(sql: str) -> str:
    """The query with literals, columns and tables masked: the shape a model copies."""
    try:
        tree = sqlglot.parse_one(sql)
    except sqlglot.errors.SqlglotError:
        return ""
    for node in list(tree.find_all(exp.Literal)):
        node.replace(exp.Literal.string("?"))
    for node in list(tree.find_all(exp.Column)):
        node.replace(exp.column("c"))
    for node in list(tree.find_all(exp.Table)):
        node.replace(exp.to_table("t"))
    return tree.sql()


async def _seed(
    embeddings: object, items: list[dict], seed: int, k: int, skeleton_weight: float, slots: int
) -> dict:
    info = schema.describe(databases.get("chinook"))
    words = examples.vocabulary([(t.name, [c.name for c in t.columns]) for t in info.tables])
    train, test = learning.split(items, seed)
    approved = [examples.Example(i["question"], i["sql"], verified=True) for i in train]
    bank = examples.ExampleBank(examples.load_bank("chinook") + approved, embeddings, words, slots)  # type: ignore[arg-type]
    shown = same_last = 0
    for item in test:
        vec = await embeddings.aembed_query(item["question"])  # type: ignore[attr-defined]
        chosen = await bank.nearest(item["question"], vec, k, skeleton_weight)
        shown += any(e.verified for e in chosen)
        same_last += bool(chosen) and structure(chosen[-1].sql) == structure(item["sql"])
    return {"seed": seed, "test": len(test), "shown_approved": shown, "closest_same_structure": same_last}


def run(embeddings: object, seeds: list[int], k: int = 3, skeleton_weight: float = 0.7) -> list[dict]:
    """Per seed, with the verified slots as configured and without them (`slots` 0)."""
    items = scorer.load_testset()
    rows = []
    for seed in seeds:
        for slots in (0, examples.VERIFIED_SLOTS):
            row = asyncio.run(_seed(embeddings, items, seed, k, skeleton_weight, slots))
            rows.append({**row, "verified_slots": slots})
    return rows
