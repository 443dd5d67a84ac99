"""Does the system learn from verified examples, and does poisoned feedback change nothing?

`learn`: the test set is split in two halves (per difficulty level, seeded); accuracy on the test
half is measured, every training item's gold pair is proposed and approved through the real
examples mechanism (/feedback then the admin /examples route, or the same store functions in
process), and the test half is measured again in the same run.

`poison`: the test set is measured, 50 malicious proposals (eval/poison.py) are posted and left
unapproved, and it is measured again: accuracy and every answer must be unchanged, and no
proposal's question may appear among the examples any prompt showed.

Targets: a running service (`--url`, a key for /ask and /feedback, an admin key for /examples;
start it with a throwaway ASKDB_EXAMPLE_STORE: approvals persist), or the chain in this process
over the stored models with a temporary store (`--in-process TAG`).
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx

from eval import runner, scorer
from eval.poison import malicious
from pipeline import databases
from pipeline.example_store import ExampleStore, ProposalError


class Target(Protocol):
    def score(self, items: list[dict], label: str, options: dict) -> dict: ...
    def propose(self, body: dict) -> str | None: ...
    def approve(self, proposal_id: str) -> None: ...


class ServiceTarget:
    def __init__(self, url: str, key: str | None, admin_key: str | None, db: str, concurrency: int) -> None:
        self.url, self.key, self.admin_key, self.db, self.concurrency = url, key, admin_key, db, concurrency

    def _post(self, path: str, body: dict, key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=120)

    def score(self, items: list[dict], label: str, options: dict) -> dict:
        return runner.run(
            self.url, db=self.db, label=label, options=options, items=items,
            concurrency=self.concurrency, key=self.key,
        )  # fmt: skip

    def propose(self, body: dict) -> str | None:
        resp = self._post("/feedback", {**body, "db": self.db}, self.key)
        return resp.json().get("proposal_id") if resp.status_code == 200 else None

    def approve(self, proposal_id: str) -> None:
        resp = self._post(
            "/examples", {"action": "approve", "db": self.db, "id": proposal_id}, self.admin_key
        )
        resp.raise_for_status()


class InProcessTarget:
    def __init__(self, tag: str, db: str, store_dir: Path) -> None:
        from eval.inprocess import Session  # loads torch: only when asked for

        self.db, self.store = db, ExampleStore(store_dir)
        self.dialect = databases.get(db).dialect
        self.session = Session(tag, self.store)

    def score(self, items: list[dict], label: str, options: dict) -> dict:
        return self.session.score(items, label=label, options=options, db=self.db)

    def propose(self, body: dict) -> str | None:
        try:
            proposal = self.store.propose(self.db, body["question"], body["sql"], self.dialect, key="eval")
        except ProposalError:
            return None
        return proposal.id

    def approve(self, proposal_id: str) -> None:
        self.store.decide(self.db, proposal_id, True, "eval", self.dialect)


def split(items: list[dict], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test): each difficulty level shuffled with `seed` and dealt alternately."""
    rng = random.Random(seed)
    train, test = [], []
    for level in sorted({i["level"] for i in items}):
        group = [i for i in items if i["level"] == level]
        rng.shuffle(group)
        train += group[0::2]
        test += group[1::2]
    return train, test


def learn(
    target: Target,
    items: list[dict],
    options: dict,
    seed: int = 0,
    before_from: Callable[[], dict] | None = None,
) -> dict:
    """`before_from`: gives a `run` report of the same code and options over these items, read once
    the after-pass is done; the test half's "before" comes from it instead of a pass of its own
    (greedy decoding writes the same SQL), so several seeds can share one pass over the whole set."""
    train, test = split(items, seed)
    return {"mode": "learn", "seed": seed, **_learn(target, train, test, options, before_from)}


def learn_paired(target: Target, variants: list[dict], originals: list[dict], options: dict) -> dict:
    """The test half is `variants` (eval/testset/<db>-variants.yaml: each rephrases the test question
    its `of` names, same structure, another value); the training half is those originals, whose
    gold pairs are approved. The halves of `learn` share no query template (every test question is
    its own), so they show whether unrelated approvals distract; these show whether an approved
    answer helps the next user who asks the same kind of question."""
    by_id = {o["id"]: o for o in originals}
    unknown = [v["id"] for v in variants if v.get("of") not in by_id]
    if unknown:
        raise scorer.TestsetError(f"variants without an original (`of`): {', '.join(unknown)}")
    train = [by_id[v["of"]] for v in variants]
    return {"mode": "learn-paired", **_learn(target, train, variants, options, None)}


def _learn(
    target: Target,
    train: list[dict],
    test: list[dict],
    options: dict,
    before_from: Callable[[], dict] | None,
) -> dict:
    before = None if before_from else target.score(test, "test-before", options)
    approved = []
    for item in train:
        pid = target.propose({"request_id": f"{len(approved) + 1:032x}", "score": 1.0, **_pair(item)})
        if pid:
            target.approve(pid)
            approved.append(item["id"])
    after = target.score(test, "test-after", options)
    if before_from is not None:  # read only now: a whole-set run may still be writing it
        before = _subset(before_from(), test, options)
    used = sum(bool(set(shown(d)) & {i["question"] for i in train}) for d in after["questions"])
    return {
        "train": [i["id"] for i in train],
        "approved": approved,
        "test_questions_shown_an_approved_example": used,
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "before_from": None if before_from is None else before["label"],
        "reports": [before, after],
    }


def _subset(report: dict, items: list[dict], options: dict) -> dict:
    if report.get("options") != options:
        raise ValueError(f"the before report ran with options {report.get('options')}, not {options}")
    by_id = {d["id"]: d for d in report["questions"]}
    missing = [i["id"] for i in items if i["id"] not in by_id]
    if missing:
        raise ValueError(f"the before report lacks {', '.join(missing)}")
    details = [by_id[i["id"]] for i in items]
    return runner.summarise(f"before ({report['label']})", options, details, report.get("model"))


def poison(
    target: Target,
    items: list[dict],
    options: dict,
    n: int = 50,
    before_from: Callable[[], dict] | None = None,
) -> dict:
    """`before_from`: as in `learn`, a `run` report of the same code and options over `items` stands
    in for the pass before the proposals are posted."""
    before = None if before_from else target.score(items, "before-poison", options)
    bodies = malicious(items, n)
    stored = [b for b in bodies if target.propose(b)]
    after = target.score(items, "after-poison", options)
    if before_from is not None:
        before = _subset(before_from(), items, options)
    proposed = {b["question"] for b in bodies}
    changed = [
        b["id"]
        for b, a in zip(before["questions"], after["questions"], strict=True)
        if (b["sql"], b["rows"]) != (a["sql"], a["rows"])
    ]
    seen = sorted({q for d in after["questions"] for q in shown(d) if q in proposed})
    return {
        "mode": "poison",
        "proposals": len(bodies),
        "stored_unapproved": len(stored),
        "refused_at_feedback": len(bodies) - len(stored),
        "accuracy_before": before["accuracy"],
        "accuracy_after": after["accuracy"],
        "before_from": None if before_from is None else before["label"],
        "answers_changed": changed,
        "proposals_shown_to_the_model": seen,
        "reports": [before, after],
    }


def shown(detail: dict) -> list[str]:
    """The example questions a scored question's prompt showed. In process, read from the first
    prompt itself (its user turns before the question), which a 422 reply has too; through the
    service, the reply's `examples` (empty on a 422)."""
    calls = detail.get("generations")
    return calls[0]["user_turns"][:-1] if calls else detail["examples"]


def _pair(item: dict) -> dict:
    return {"question": item["question"], "sql": item["sql"]}


def temporary_store() -> Path:
    return Path(tempfile.mkdtemp(prefix="askdb-eval-examples-"))
