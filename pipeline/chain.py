"""The composed text-to-SQL chain: schema | embed | examples | select | prompt | solve | answer.

`build_chain(llm, embeddings)` takes any LangChain chat model and `Embeddings` (the service hands it
askdb's runners or a provider's model: providers/resolver.py). Input: `AskInput`; output: `AskResult`,
the /ask response fields (API.md, plus `explanation` and `confidence`) less `latency_ms` and `model`,
plus `models` (what wrote the SQL and the answer). Every step is a Runnable over the `AskState` dict,
so users can reorder, drop or replace steps in their own LCEL code. Failures raise `AskFailed` (its
`kind` is the API's 422 error type).
"""

from __future__ import annotations

import asyncio
from typing import Any, NotRequired, TypedDict

from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough
from pydantic import BaseModel, Field

import settings
from pipeline import answer as answer_mod
from pipeline import databases, enforce, example_store, examples, prompt, repair, schema
from pipeline import grammar as sql_grammar
from pipeline.confidence import confidence
from pipeline.example_store import ExampleStore
from pipeline.explain import explain
from pipeline.generate import Usage, constrained
from pipeline.policy import DataPolicy
from pipeline.select import TableSelector

S = settings.get()
QUERY_TIMEOUT_S = S.query_timeout_s


class AskOptions(BaseModel):
    """Per-request tuning (evaluation ablations); the defaults come from the environment."""

    examples: int = Field(S.ask_examples, ge=0, le=8, description="few-shot examples")
    max_attempts: int = Field(S.ask_max_attempts, ge=1, le=5, description="generation rounds (1 = no repair)")
    candidates: int = Field(S.ask_candidates, ge=1, le=8, description="self-consistency candidates")
    skeleton: float = Field(S.ask_skeleton, ge=0, le=1, description="weight of question-shape similarity")
    ground: bool = Field(True, description="drop conditions on values the question never mentions")
    select: bool = Field(True, description="select tables for large schemas")
    timeout_s: float = Field(
        QUERY_TIMEOUT_S, gt=0, le=QUERY_TIMEOUT_S, description="per-query time limit (at most the server's)"
    )
    answer: bool = Field(True, description="write a short answer from the rows")
    grammar: bool = Field(
        S.ask_grammar,
        description="constrain SQL decoding to the schema's grammar (local runner only)",
    )


class AskInput(TypedDict):
    question: str
    db: str | databases.Database  # a configured name, or a database opened already
    max_rows: NotRequired[int]  # default 100
    options: NotRequired[AskOptions | dict | None]  # default AskOptions()
    policy: NotRequired[DataPolicy | None]  # the caller's data policy on `db` (pipeline/policy.py)


class AskState(TypedDict):
    """What the steps read and add, in order (each `assign` below adds one key)."""

    question: str
    db: databases.Database
    max_rows: int
    options: AskOptions
    policy: DataPolicy | None
    usage: Usage  # tokens and the models that replied, over every call
    schema: schema.SchemaInfo  # as the caller may see it
    qvec: list[float]  # the question's embedding
    examples: list[examples.Example]  # few-shot pairs, closest last
    tables: list[str] | None  # the tables selected for the prompt (None: all)
    messages: list[BaseMessage]  # the prompt
    solved: tuple[repair.Outcome, int, float | None]  # the winning candidate, rounds, agreement
    answer: str


class TokenCounts(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AskResult(TypedDict):
    question: str
    db: str
    # the query: what ran (under a data policy, the rewritten one), in words, after how many rounds
    sql: str
    explanation: str
    attempts: int
    confidence: float | None
    # its result
    columns: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool
    answer: str
    # what it took
    usage: TokenCounts
    models: list[str]  # what wrote the SQL and the answer
    tables: list[str]
    examples: list[str]


def _both(afunc: Any, name: str) -> RunnableLambda:
    """A step usable with both `invoke` and `ainvoke` (the work itself is async)."""
    return RunnableLambda(lambda state: asyncio.run(afunc(state)), afunc=afunc, name=name)


class TextToSQL:
    """Holds the models and per-database caches (bank vectors, table vectors) behind the steps."""

    def __init__(
        self,
        llm: BaseChatModel,
        embeddings: Embeddings,
        timeout_s: float = QUERY_TIMEOUT_S,
        store: ExampleStore | None = None,
    ) -> None:
        self.llm = llm
        self.embeddings = embeddings
        self.timeout_s = timeout_s
        self.selector = TableSelector(embeddings)
        self.store = store or example_store.store()
        self.banks: dict[tuple[str, str], tuple[object, examples.ExampleBank]] = {}

    def bank(self, db: databases.Database, info: schema.SchemaInfo) -> examples.ExampleBank:
        """The database's bank plus its approved examples, rebuilt when approved.yaml changes (an
        approval in any process). Proposals are never read here: only approved pairs reach a prompt."""
        key, stamp = (db.name, db.dialect), self.store.stamp(db.name)
        cached = self.banks.get(key)
        if cached is None or cached[0] != stamp:
            tables = {t.name for t in info.tables}
            bank = examples.load_bank(db.name, db.dialect, tables) + self.store.approved(db.name)
            words = examples.vocabulary([(t.name, [c.name for c in t.columns]) for t in info.tables])
            self.banks[key] = (stamp, examples.ExampleBank(bank, self.embeddings, words))
        return self.banks[key][1]

    # --- steps: each takes the state dict and returns one new value ---
    @staticmethod
    def start(state: AskInput) -> dict:
        db = state["db"]
        opts = state.get("options") or AskOptions()
        return {
            **state,
            "db": db if isinstance(db, databases.Database) else databases.get(db),
            "options": opts if isinstance(opts, AskOptions) else AskOptions.model_validate(opts),
            "max_rows": int(state.get("max_rows", 100)),
            "usage": Usage(),
            "policy": state.get("policy"),  # the caller's DataPolicy for this database, or None
        }

    @staticmethod
    def describe(state: AskState) -> schema.SchemaInfo:
        """The schema as the caller may see it: under a data policy, hidden columns are gone and
        sample rows come through the policy (pipeline/enforce.py)."""
        info = schema.describe(state["db"])
        policy = state["policy"]
        return info if policy is None else enforce.cached_view(info, policy, state["db"])

    async def embed_question(self, state: AskState) -> list[float]:
        return await self.embeddings.aembed_query(state["question"])

    async def pick_examples(self, state: AskState) -> list[examples.Example]:
        return await self.bank(state["db"], schema.describe(state["db"])).nearest(
            state["question"], state["qvec"], state["options"].examples, state["options"].skeleton
        )

    async def select_tables(self, state: AskState) -> list[str] | None:
        if not state["options"].select:
            return None
        return await self.selector.select(state["qvec"], state["schema"], state["examples"])

    @staticmethod
    def build_prompt(state: AskState) -> list[BaseMessage]:
        text = prompt.compact_schema(state["schema"], state["tables"])
        return prompt.build(state["question"], text, state["db"].dialect, state["examples"])

    async def solve(self, state: AskState) -> tuple[repair.Outcome, int, float | None]:
        opts = state["options"]
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
            policy=state["policy"],
        )

    async def write_answer(self, state: AskState) -> str:
        if not state["options"].answer:
            return ""
        outcome = state["solved"][0]
        return await answer_mod.answer(self.llm, state["question"], outcome.result, state["usage"])

    @staticmethod
    def finish(state: AskState) -> AskResult:
        outcome, rounds, agree = state["solved"]
        result, db, policy = outcome.result, state["db"], state["policy"]
        sentence = explain(
            outcome.safe_sql or "",
            db.dialect,
            cap=state["max_rows"] + 1,  # the guard's LIMIT, not the author's
            policed=outcome.policed,
            key=policy.key if policy else "",
        )
        return {
            "question": state["question"],
            "db": db.name,
            "sql": outcome.ran,  # what ran: under a data policy, the rewritten query
            "explanation": sentence,
            "attempts": rounds,
            "confidence": confidence(outcome.logprobs, agree),
            "columns": result.columns,
            "rows": result.rows,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "answer": state["answer"],
            "usage": state["usage"].to_api(),
            "models": list(state["usage"].models),
            "tables": state["tables"] or [t.name for t in state["schema"].tables],
            "examples": [e.question for e in state["examples"]],
        }

    def runnable(self) -> Runnable:
        steps: list[tuple[str, Runnable]] = [  # (the AskState key it adds, the step)
            ("schema", RunnableLambda(self.describe, name="schema")),
            ("qvec", _both(self.embed_question, "embed")),
            ("examples", _both(self.pick_examples, "examples")),
            ("tables", _both(self.select_tables, "select")),
            ("messages", RunnableLambda(self.build_prompt, name="prompt")),
            ("solved", _both(self.solve, "generate-guard-execute-repair")),
            ("answer", _both(self.write_answer, "answer")),
        ]
        chain: Runnable = RunnableLambda(self.start, name="start")
        for key, step in steps:
            assert key in AskState.__annotations__, key  # the state's type lists every key
            chain = chain | RunnablePassthrough.assign(**{key: step})
        return chain | RunnableLambda(self.finish, name="finish")


def build_chain(
    llm: BaseChatModel,
    embeddings: Embeddings,
    timeout_s: float = QUERY_TIMEOUT_S,
    store: ExampleStore | None = None,
) -> Runnable:
    """The whole pipeline as one LCEL Runnable (see the module docstring for its input and output)."""
    return TextToSQL(llm, embeddings, timeout_s, store).runnable()
