"""Repair step, with self-consistency: candidates are guarded and executed; failures go back to the LLM.

One round: `candidates` replies (the first greedy, the rest sampled) are guarded and executed; the
result set most candidates agree on wins. If none runs, the failed SQL and the error (parse, guard
or database) go back to the model as a new turn, up to `max_attempts` rounds in all. A repair that
repeats an already failed query is re-drawn by sampling, since a tiny model at temperature 0 tends
to repeat itself. A timeout ends the loop: another try could run just as long.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from pipeline.confidence import agreement
from pipeline.databases import Database
from pipeline.enforce import PolicyRefused, enforce, view
from pipeline.execute import QueryResult, QueryTimeout, SQLError, execute, in_thread
from pipeline.generate import Usage, generate, ground_literals
from pipeline.guard import ParseError, Refused, guard
from pipeline.joins import fix_self_comparisons, remaining_self_comparisons
from pipeline.policy import DataPolicy
from pipeline.prompt import dialect_name
from pipeline.schema import describe
from pipeline.values import add_missing_values, fix_value_columns

SAMPLE_TEMPERATURE = 0.7


class AskFailed(Exception):
    """The pipeline gave up; `kind` is the API's error type: unanswerable|refused|sql_error|timeout."""

    def __init__(self, kind: str, message: str, sql: str | None, attempts: int) -> None:
        super().__init__(message)
        self.kind, self.message, self.sql, self.attempts = kind, message, sql, attempts

    def to_api(self) -> dict:
        return {"error": {"type": self.kind, "message": self.message, "sql": self.sql}}


@dataclass
class Outcome:
    """One candidate: the SQL the model wrote, what ran, and the result or the error."""

    raw: str
    sql: str | None
    safe_sql: str | None = None  # guarded: the query as the model (and grounding) meant it
    result: QueryResult | None = None
    kind: str | None = None  # error type when it failed
    error: str | None = None
    executed_sql: str | None = None  # what ran: safe_sql under the caller's data policy
    policed: list[str] = field(default_factory=list)  # the tables the policy rewrote
    logprobs: list[float] | None = None  # of the reply that wrote it (pipeline/confidence.py)

    @property
    def ok(self) -> bool:
        return self.result is not None

    @property
    def ran(self) -> str | None:
        return self.executed_sql or self.safe_sql


def check(
    db: Database, sql: str | None, raw: str, max_rows: int, timeout_s: float, policy: DataPolicy | None = None
) -> Outcome:
    """Guard, apply the caller's data policy, and execute one candidate (blocking: run it in a thread)."""
    if sql is None:
        return Outcome(raw, None, kind="unanswerable", error="the model's reply contains no SQL statement")
    try:
        # the guard's allow-list: the tables /schema shows (reflected once, cached)
        safe = guard(sql, db.dialect, max_rows, [t.name for t in describe(db).tables])
    except ParseError as err:
        return Outcome(raw, sql, kind="sql_error", error=str(err))
    except Refused as err:
        return Outcome(raw, sql, kind="refused", error=str(err))
    run, policed = safe, []
    if policy is not None:
        try:
            run, policed = enforce(safe, policy, describe(db))
        except PolicyRefused as err:  # never run unfiltered
            return Outcome(raw, sql, safe, kind="refused", error=str(err))
    out = Outcome(raw, sql, safe, executed_sql=run, policed=policed)
    try:
        out.result = execute(db, run, max_rows, timeout_s)
    except QueryTimeout as err:
        out.kind, out.error = "timeout", str(err)
    except SQLError as err:
        out.kind, out.error = "sql_error", str(err)
    return out


def ground_sql(
    sql: str, question: str, db: Database, timeout_s: float, policy: DataPolicy | None = None
) -> str:
    """The model's query tied to the question and the data (blocking: value lookups hit the database):
    invented filters dropped, `ON T.c = T.c` re-pointed (pipeline/joins.py), a value looked for in the
    column that holds it, a value the question names but the query dropped put back (pipeline/values.py).
    Under a data policy the lookups see only what the caller may see."""
    try:
        info = describe(db) if policy is None else view(describe(db), policy)
    except PolicyRefused:
        return sql  # check() refuses it, naming the policy
    grounded = ground_literals(sql, question, db.dialect)
    grounded = fix_self_comparisons(grounded, db.dialect, info)
    grounded = fix_value_columns(grounded, db, info, timeout_s, policy)
    return add_missing_values(grounded, question, db, info, timeout_s, policy)


def _key(result: QueryResult) -> tuple:
    return tuple(sorted(repr(row) for row in result.rows))


def vote(outcomes: list[Outcome]) -> Outcome:
    """The candidate whose result set most candidates share; non-empty results beat empty ones
    (a wrong literal gives an empty set), ties go to the earlier (greedier) candidate."""
    ok = [o for o in outcomes if o.ok]
    counts = Counter(_key(o.result) for o in ok)
    return max(ok, key=lambda o: (bool(o.result.rows), counts[_key(o.result)], -ok.index(o)))


def repair_turns(outcome: Outcome, question: str, dialect: str) -> list[BaseMessage]:
    name = dialect_name(dialect)
    if outcome.sql is None:
        hint = f"That was not SQL. Answer with one {name} SELECT statement only."
    else:
        hint = f"That query failed: {outcome.error}\nWrite a corrected {name} SELECT statement."
    return [AIMessage(outcome.raw.strip() or "(empty)"), HumanMessage(f"{hint}\nQuestion: {question}")]


async def solve(
    llm: BaseChatModel,
    messages: list[BaseMessage],
    *,
    db: Database,
    question: str,
    max_rows: int,
    timeout_s: float,
    usage: Usage,
    max_attempts: int = 3,
    candidates: int = 1,
    ground: bool = True,
    policy: DataPolicy | None = None,
) -> tuple[Outcome, int, float | None]:
    """(winning outcome, rounds used, candidates' agreement or None); raises AskFailed when no round
    produced a runnable query."""

    async def attempt(msgs: list[BaseMessage], temperature: float, seed: int | None) -> Outcome:
        raw, sql, logprobs = await generate(llm, msgs, usage, temperature, seed)
        if sql and ground:
            grounded = await in_thread(ground_sql, sql, question, db, timeout_s, policy)
            if grounded != sql:  # the model's own query stays the fallback
                outcome = await in_thread(check, db, grounded, raw, max_rows, timeout_s, policy)
                if outcome.ok:
                    outcome.logprobs = logprobs
                    return outcome
        if sql and (always_true := remaining_self_comparisons(sql, db.dialect)):
            # It would run and return a cross product: ask for a repair instead of answering wrongly.
            error = f"the JOIN condition {always_true[0]} compares a column with itself"
            return Outcome(raw, sql, kind="sql_error", error=error + "; join on the column both tables share")
        outcome = await in_thread(check, db, sql, raw, max_rows, timeout_s, policy)
        outcome.logprobs = logprobs
        return outcome

    first = await asyncio.gather(
        *(attempt(messages, 0.0 if i == 0 else SAMPLE_TEMPERATURE, i) for i in range(candidates))
    )
    if any(o.ok for o in first):
        winner = vote(list(first))
        keys = [_key(o.result) if o.result is not None else None for o in first]
        return winner, 1, agreement(keys, _key(winner.result)) if winner.result is not None else None
    last, failed = first[0], {o.sql for o in first}
    rounds = 1
    while rounds < max_attempts and last.kind != "timeout":
        rounds += 1
        turns = messages + repair_turns(last, question, db.dialect)
        outcome = await attempt(turns, 0.0, None)
        if outcome.sql in failed:  # repeated itself: draw a different one
            outcome = await attempt(turns, SAMPLE_TEMPERATURE, rounds)
        if outcome.ok:
            return outcome, rounds, None  # a repair is one candidate: nothing to agree with
        failed.add(outcome.sql)
        last = outcome
    raise AskFailed(last.kind or "unanswerable", last.error or "no answer", last.ran or last.sql, rounds)
