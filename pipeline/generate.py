"""Generate step: the chat model writes SQL; `extract_sql` pulls the statement out of its reply.

Any LangChain chat model works (the local runner, ChatOpenAI, ...). Decoding is greedy for the
main candidate; extra self-consistency candidates are sampled (`temperature`, `seed` bound).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import sqlglot
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from sqlglot import exp

from pipeline.confidence import statement_logprobs, token_logprobs
from pipeline.guard import DIALECTS

# Generation stops at the end of the first statement: the SQL in the few-shot turns is one line.
STOP = [";", "\n\n"]
MAX_TOKENS = 120  # the longest gold query is ~90 tokens; runaway replies cost seconds each
_FENCE = re.compile(r"```(?:sql|sqlite|postgresql)?\s*(.*?)(?:```|$)", re.S | re.I)
# Where a statement starts; keywords that are also English words must look like SQL around them.
_START = re.compile(
    r"\b(SELECT\b|WITH\s+(RECURSIVE\s+)?\w+(\s*\([^)]*\))?\s+AS\b|(INSERT|REPLACE)\s+INTO\b"
    r"|UPDATE\s+\S+\s+SET\b|DELETE\s+FROM\b|(DROP|CREATE|ALTER|TRUNCATE)\s+\w+|PRAGMA\b|ATTACH\b|COPY\s+\S)",
    re.I,
)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    lock: object = field(default=None, repr=False)
    # Models that replied, in order: a provider route or its fallback may answer instead of the runner.
    models: list[str] = field(default_factory=list)

    def add(self, message: AIMessage) -> None:
        meta = getattr(message, "usage_metadata", None) or {}
        self.prompt_tokens += int(meta.get("input_tokens", 0))
        self.completion_tokens += int(meta.get("output_tokens", 0))
        self.calls += 1
        meta = getattr(message, "response_metadata", None) or {}
        name, provider = meta.get("model_name"), meta.get("askdb_provider")  # providers/chain.py stamps it
        if name and provider and provider != "local":
            name = f"{provider}/{name}"
        if name and name not in self.models:
            self.models.append(str(name))

    def to_api(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def _first_statement(text: str) -> str:
    """Text up to the first `;` outside quotes (later statements are never run)."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"', "`"):
            quote = ch
        elif ch == ";":
            return text[:i]
    return text


def extract_sql(text: str) -> str | None:
    """The SQL statement in a model reply (fenced or bare), or None when there is none."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = _START.search(body)
    if not start:
        return None
    sql = _first_statement(body[start.start() :]).split("\n\n")[0].strip()
    return sql or None


class Draft(NamedTuple):
    text: str  # the raw reply
    sql: str | None  # the statement extracted from it
    logprobs: list[float] | None  # of the statement's tokens, when the model reports them


async def generate(
    llm: BaseChatModel,
    messages: list[BaseMessage],
    usage: Usage,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Draft:
    """One candidate: the reply, its SQL and (for pipeline/confidence.py) its token log-probabilities."""
    params: dict = {"stop": STOP, "max_tokens": MAX_TOKENS}
    if temperature > 0:
        params.update(temperature=temperature, seed=seed)
    else:
        params.update(temperature=0.0)
    reply = await llm.bind(**params).ainvoke(messages)
    usage.add(reply)
    text = str(reply.content)
    sql, tokens = extract_sql(text), token_logprobs(reply)
    return Draft(text, sql, statement_logprobs(tokens, sql) if tokens else None)


def constrained(llm: BaseChatModel, grammar: str | None) -> BaseChatModel:
    """`llm` bound to `grammar` when it decodes under one (it says `takes_grammar = True`: askdb's
    runner, providers/local.py); other chat models (providers) are returned as they are."""
    if grammar is None or getattr(llm, "takes_grammar", False) is not True:
        return llm
    return llm.bind(grammar=grammar)  # type: ignore[return-value]  # a Runnable with the same calls


def _mentioned(literal: exp.Literal, question: str) -> bool:
    text = str(literal.this).strip("%").lower()
    if any(c.isdigit() for c in text) and any(c.isdigit() for c in question):
        return True  # derived numbers: "10 minutes" -> 600000, "after 2003" -> '2004-01-01'
    return not text or text in question.lower()


def ground_literals(sql: str, question: str, dialect: str = "sqlite") -> str:
    """`sql` without the WHERE/HAVING conditions whose values appear nowhere in the question.

    The 135M model pads queries with invented filters (`WHERE ArtistId = 1234567890`); a literal
    the user never wrote is a guess, and dropping its condition is right far more often than not.
    The result is still only a candidate: the guard and the database check it like any other."""
    try:
        tree = sqlglot.parse_one(sql, read=DIALECTS.get(dialect, dialect))
    except sqlglot.errors.SqlglotError:  # TokenError too (unterminated quotes in a reply)
        return sql
    changed = False
    for cond in list(tree.find_all(exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like)):
        literals = [n for n in cond.find_all(exp.Literal) if not isinstance(n.parent, exp.Func)]
        if not literals or any(_mentioned(lit, question) for lit in literals):
            continue
        parent = cond.parent
        if isinstance(parent, exp.And | exp.Or):
            parent.replace(parent.right if parent.left is cond else parent.left)
        elif isinstance(parent, exp.Where | exp.Having):
            parent.pop()
        else:
            continue
        changed = True
    return tree.sql(dialect=DIALECTS.get(dialect, dialect)) if changed else sql
