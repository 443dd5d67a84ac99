"""The composed text-to-SQL chain: schema | embed | examples | select | prompt | solve | answer.

`build_chain(llm, embeddings)` takes any LangChain chat model and `Embeddings`. Input:
`{"question": str, "db": str | Database, "max_rows": int, "options": AskOptions | dict}`; output:
the /ask response fields (API.md) less `latency_ms` and `model`, which the caller adds. Every step
is a Runnable over a dict state, so users can reorder, drop or replace steps in their own LCEL code.
Failures raise `AskFailed` (its `kind` is the API's 422 error type).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from pydantic import BaseModel, Field

from pipeline import answer as answer_mod
from pipeline import databases, examples, prompt, repair, schema
from pipeline import grammar as sql_grammar
from pipeline.generate import Usage, constrained
from pipeline.select import TableSelector


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


QUERY_TIMEOUT_S = _env("ASKDB_QUERY_TIMEOUT_S", 10.0)


class AskOptions(BaseModel):
    """Per-request tuning (evaluation ablations); the defaults come from the environment."""

    examples: int = Field(int(_env("ASKDB_ASK_EXAMPLES", 3)), ge=0, le=8, description="few-shot examples")
    max_attempts: int = Field(
        int(_env("ASKDB_ASK_MAX_ATTEMPTS", 3)), ge=1, le=5, description="generation rounds (1 = no repair)"
    )
    candidates: int = Field(
        int(_env("ASKDB_ASK_CANDIDATES", 1)), ge=1, le=8, description="self-consistency candidates"
    )
    skeleton: float = Field(
        _env("ASKDB_ASK_SKELETON", 0.7), ge=0, le=1, description="weight of question-shape similarity"
    )
    ground: bool = Field(True, description="drop conditions on values the question never mentions")
    select: bool = Field(True, description="select tables for large schemas")
    timeout_s: float = Field(
        QUERY_TIMEOUT_S, gt=0, le=QUERY_TIMEOUT_S, description="per-query time limit (at most the server's)"
    )
    answer: bool = Field(True, description="write a short answer from the rows")
    grammar: bool = Field(
        os.environ.get("ASKDB_ASK_GRAMMAR", "0").lower() in ("1", "true", "yes"),
        description="constrain SQL decoding to the schema's grammar (local runner only)",
    )


def _both(afunc: Any, name: str) -> RunnableLambda:
    """A step usable with both `invoke` and `ainvoke` (the work itself is async)."""
    return RunnableLambda(lambda state: asyncio.run(afunc(state)), afunc=afunc, name=name)


class TextToSQL:
    """Holds the models and per-database caches (bank vectors, table vectors) behind the steps."""

    def __init__(
        self, llm: BaseChatModel, embeddings: Embeddings, timeout_s: float = QUERY_TIMEOUT_S
    ) -> None:
        self.llm = llm
        self.embeddings = embeddings
        self.timeout_s = timeout_s
        self.selector = TableSelector(embeddings)
        self.banks: dict[tuple[str, str], examples.ExampleBank] = {}

    def bank(self, db: databases.Database, info: schema.SchemaInfo) -> examples.ExampleBank:
        key = (db.name, db.dialect)
        if key not in self.banks:
            tables = {t.name for t in info.tables}
            bank = examples.load_bank(db.name, db.dialect, tables)
            words = examples.vocabulary([(t.name, [c.name for c in t.columns]) for t in info.tables])
            self.banks[key] = examples.ExampleBank(bank, self.embeddings, words)
        return self.banks[key]

    # --- steps: each takes the state dict and returns one new value ---
    @staticmethod
    def start(state: dict) -> dict:
        db = state["db"]
        opts = state.get("options") or AskOptions()
        return {
            **state,
            "db": db if isinstance(db, databases.Database) else databases.get(db),
            "options": opts if isinstance(opts, AskOptions) else AskOptions.model_validate(opts),
            "max_rows": int(state.get("max_rows", 100)),
            "usage": Usage(),
        }

    async def embed_question(self, state: dict) -> list[float]:
        return await self.embeddings.aembed_query(state["question"])

    async def pick_examples(self, state: dict) -> list[examples.Example]:
        return await self.bank(state["db"], state["schema"]).nearest(
            state["question"], state["qvec"], state["options"].examples, state["options"].skeleton
        )

    async def select_tables(self, state: dict) -> list[str] | None:
        if not state["options"].select:
            return None
        return await self.selector.select(state["qvec"], state["schema"], state["examples"])

    @staticmethod
    def build_prompt(state: dict) -> list:
        text = prompt.compact_schema(state["schema"], state["tables"])
        return prompt.build(state["question"], text, state["db"].dialect, state["examples"])

    async def solve(self, state: dict) -> tuple[repair.Outcome, int]:
        opts: AskOptions = state["options"]
        grammar = sql_grammar.for_schema(state["schema"]) if opts.grammar else None
        return await repair.solve(
            constrained(self.llm, grammar),
            state["messages"],
            db=state["db"],
            question=state["question"],
            max_rows=state["max_rows"],
            timeout_s=min(self.timeout_s, opts.timeout_s),
            usage=state["usage"],
            max_attempts=opts.max_attempts,
            candidates=opts.candidates,
            ground=opts.ground,
        )

    async def write_answer(self, state: dict) -> str:
        if not state["options"].answer:
            return ""
        outcome, _ = state["solved"]
        return await answer_mod.answer(self.llm, state["question"], outcome.result, state["usage"])

    @staticmethod
    def finish(state: dict) -> dict:
        outcome, rounds = state["solved"]
        result = outcome.result
        return {
            "question": state["question"],
            "db": state["db"].name,
            "sql": outcome.safe_sql,
            "columns": result.columns,
            "rows": result.rows,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "answer": state["answer"],
            "attempts": rounds,
            "usage": state["usage"].to_api(),
            "models": list(state["usage"].models),  # what wrote the SQL and the answer
            "tables": state["tables"] or [t.name for t in state["schema"].tables],
            "examples": [e.question for e in state["examples"]],
        }

    def runnable(self) -> Runnable:
        assign = RunnablePassthrough.assign
        return (
            RunnableLambda(self.start, name="start")
            | assign(schema=RunnableLambda(lambda s: schema.describe(s["db"]), name="schema"))
            | assign(qvec=_both(self.embed_question, "embed"))
            | assign(examples=_both(self.pick_examples, "examples"))
            | assign(tables=_both(self.select_tables, "select"))
            | assign(messages=RunnableLambda(self.build_prompt, name="prompt"))
            | assign(solved=_both(self.solve, "generate-guard-execute-repair"))
            | assign(answer=_both(self.write_answer, "answer"))
            | RunnableLambda(self.finish, name="finish")
        )


def build_chain(llm: BaseChatModel, embeddings: Embeddings, timeout_s: float = QUERY_TIMEOUT_S) -> Runnable:
    """The whole pipeline as one LCEL Runnable (see the module docstring for its input and output)."""
    return TextToSQL(llm, embeddings, timeout_s).runnable()
