"""Score the same chain without a server: the runner engines loaded in this process, questions one
at a time. For machines where a served runner's batch window times out (shared, overloaded CPU);
the numbers match /ask's, which only adds HTTP and batching around this chain."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import bentoml

from eval import runner, scorer
from models.defaults import DEFAULT_EMBED_TAG
from pipeline import databases
from pipeline.chain import build_chain
from pipeline.example_store import ExampleStore
from pipeline.repair import AskFailed
from providers.local import RunnerChatModel, RunnerEmbeddings
from runners import engine as llm_engine
from runners.embedding_engine import Embedder


class Engine:
    """A runner engine called directly, with the runner's API names. `calls` records every
    generation (the prompt's user turns, the reply and its tokens' log-probabilities), so a report
    can say what each prompt showed (a 422 carries no `examples`) and confidence definitions can be
    compared offline (eval/calibration.py)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[dict] = []

    def generate(self, requests: list) -> list:
        results = self.engine.run(requests)
        for req, res in zip(requests, results, strict=True):
            self.calls.append(
                {
                    "user_turns": [m.content for m in req.messages or [] if m.role == "user"],
                    "text": res.text,
                    "tokens": [[t.token, round(t.logprob, 5)] for t in res.logprobs or []],
                }
            )
        return results

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.engine.embed(texts)


def embeddings() -> RunnerEmbeddings:
    """The stored default embedding model, loaded in this process."""
    return RunnerEmbeddings(Engine(Embedder.load(bentoml.models.get(DEFAULT_EMBED_TAG).path)))


class Session:
    """The stored models loaded once in this process, and the chain over them (and `store`)."""

    def __init__(self, tag: str, store: ExampleStore | None = None) -> None:
        self.tag = tag
        self.engine = Engine(llm_engine.load(bentoml.models.get(tag).path))
        llm = RunnerChatModel(runner=self.engine, model_name=tag, logprobs=0)
        self.chain = build_chain(llm, embeddings(), store=store)

    def score(
        self,
        items: list[dict],
        *,
        label: str,
        options: dict,
        db: str = "chinook",
        progress: Path | None = None,
    ) -> dict:
        """`progress`: a JSON-lines file that gets each question's detail as soon as it is scored
        (a long run on a busy machine keeps what it did if it is stopped)."""
        database = databases.get(db)
        details = []
        for item in items:
            t0 = time.perf_counter()
            self.engine.calls.clear()
            state = {
                "question": item["question"],
                "db": db,
                "max_rows": 1000,
                "options": {**options, "answer": False},
            }
            try:
                reply: dict = {**self.chain.invoke(state), "_status": 200}
            except AskFailed as err:
                reply = {**err.to_api(), "_status": 422, "attempts": err.attempts}
            reply["_wall_ms"] = (time.perf_counter() - t0) * 1000
            detail = runner.score_one(item, reply, scorer.run_gold(database, item["sql"])[1])
            detail["latency_ms"] = round(reply["_wall_ms"], 1)
            detail["generations"] = list(self.engine.calls)  # the last one wrote the answer's SQL
            if progress is not None:
                with progress.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(detail, ensure_ascii=False, default=str) + "\n")
            details.append(detail)
            print(
                item["id"],
                "ok" if detail["correct"] else "wrong",
                detail["error"] or "",
                detail["sql"],
                flush=True,
            )
        return runner.summarise(label, options, details, self.tag)


def run(
    tag: str,
    *,
    label: str,
    options: dict,
    ids: list[str] | None,
    db: str = "chinook",
    progress: Path | None = None,
    testset: Path | None = None,
) -> dict:
    """The test set over the static bank alone: an empty example store, not ASKDB_EXAMPLE_STORE's
    approvals (which would make the score depend on what someone approved on this machine)."""
    items = [i for i in scorer.load_testset(db, testset) if not ids or i["id"] in ids]
    store = ExampleStore(tempfile.mkdtemp(prefix="askdb-eval-examples-"))
    return Session(tag, store).score(items, label=label, options=options, db=db, progress=progress)
