"""Score the same chain without a server: the runner engines loaded in this process, questions one
at a time. For machines where a served runner's batch window times out (shared, overloaded CPU);
the numbers match /ask's, which only adds HTTP and batching around this chain."""

from __future__ import annotations

import time
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
    """A runner engine called directly, with the runner's API names."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def generate(self, requests: list) -> list:
        return self.engine.run(requests)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.engine.embed(texts)


class Session:
    """The stored models loaded once in this process, and the chain over them (and `store`)."""

    def __init__(self, tag: str, store: ExampleStore | None = None) -> None:
        self.tag = tag
        llm = RunnerChatModel(
            runner=Engine(llm_engine.load(bentoml.models.get(tag).path)), model_name=tag, logprobs=0
        )
        emb = RunnerEmbeddings(Engine(Embedder.load(bentoml.models.get(DEFAULT_EMBED_TAG).path)))
        self.chain = build_chain(llm, emb, store=store)

    def score(self, items: list[dict], *, label: str, options: dict, db: str = "chinook") -> dict:
        database = databases.get(db)
        details = []
        for item in items:
            t0 = time.perf_counter()
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
            details.append(detail)
            print(
                item["id"],
                "ok" if detail["correct"] else "wrong",
                detail["error"] or "",
                detail["sql"],
                flush=True,
            )
        return runner.summarise(label, options, details, self.tag)


def run(tag: str, *, label: str, options: dict, ids: list[str] | None, db: str = "chinook") -> dict:
    items = [i for i in scorer.load_testset(db) if not ids or i["id"] in ids]
    return Session(tag).score(items, label=label, options=options, db=db)
