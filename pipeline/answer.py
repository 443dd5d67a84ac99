"""Answer step: the LLM turns the question and the first rows into one or two sentences.

Kept cheap: a short prompt with at most ANSWER_ROWS rows, a small token budget, and no model call at
all for an empty result. Skippable per request (`answer: false`).
"""

from __future__ import annotations

import json

from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate

from pipeline.execute import QueryResult
from pipeline.generate import Usage

ANSWER_ROWS = 5
MAX_TOKENS = 60

TEMPLATE = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in one short sentence using only the query result."),
        ("human", "Question: {question}\nResult columns: {columns}\nResult rows: {rows}{more}"),
    ]
)


def fallback(result: QueryResult) -> str:
    """A plain answer when the model's is empty."""
    if not result.rows:
        return "No rows matched the question."
    if len(result.rows) == 1 and len(result.columns) == 1:
        return f"{result.columns[0]}: {result.rows[0][0]}."
    return f"{len(result.rows)}{'+' if result.truncated else ''} rows found."


async def answer(llm: BaseChatModel, question: str, result: QueryResult, usage: Usage) -> str:
    if not result.rows:
        return fallback(result)
    rows = result.rows[:ANSWER_ROWS]
    more = f" (and {len(result.rows) - len(rows)} more rows)" if len(result.rows) > len(rows) else ""
    messages = TEMPLATE.format_messages(
        question=question,
        columns=", ".join(result.columns),
        rows=json.dumps(rows, ensure_ascii=False, default=str),
        more=more,
    )
    reply = await llm.bind(max_tokens=MAX_TOKENS, temperature=0.0, stop=["\n\n"]).ainvoke(messages)
    usage.add(reply)
    text = " ".join(str(reply.content).split())
    return text or fallback(result)
