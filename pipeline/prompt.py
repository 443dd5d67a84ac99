"""Prompt step: a chat prompt naming the dialect, with the (selected) schema and few-shot turns.

Few-shot examples are real chat turns (user question → assistant SQL): a small instruct model
copies the shape of earlier assistant turns far more reliably than it follows instructions.
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from pipeline.examples import Example
from pipeline.schema import SchemaInfo

DIALECT_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL"}

SYSTEM = (
    "You translate questions into {dialect_name} SQL for this database:\n\n{schema}\n\n"
    "Answer with one {dialect_name} SELECT statement and nothing else."
)

TEMPLATE = ChatPromptTemplate.from_messages(
    [("system", SYSTEM), MessagesPlaceholder("shots"), ("human", "{question}")]
)


def compact_schema(schema: SchemaInfo, tables: list[str] | None = None) -> str:
    """One line per table, `Table(Col, Col -> Other, ...)`: a tiny model copies DDL text, not SQL,
    when shown CREATE TABLE statements, and short lines keep the prompt (and its latency) small."""
    wanted = None if tables is None else {t.lower() for t in tables}
    # SQLite folds nothing and needs no quotes; elsewhere PascalCase names must be quoted
    q = str if schema.dialect == "sqlite" else schema.quote
    lines = []
    for t in schema.tables:
        if wanted is not None and t.name.lower() not in wanted:
            continue
        refs = {f.column: f.table for f in t.foreign_keys}
        cols = [f"{q(c.name)} -> {q(refs[c.name])}" if c.name in refs else q(c.name) for c in t.columns]
        lines.append(f"{q(t.name)}({', '.join(cols)})")
    return "\n".join(lines)


def dialect_name(dialect: str) -> str:
    return DIALECT_NAMES.get(dialect, dialect)


def shots(examples: list[Example]) -> list[BaseMessage]:
    turns: list[BaseMessage] = []
    for ex in examples:
        turns += [HumanMessage(ex.question), AIMessage(ex.sql)]
    return turns


def build(question: str, schema_text: str, dialect: str, examples: list[Example]) -> list[BaseMessage]:
    return TEMPLATE.format_messages(
        dialect_name=dialect_name(dialect), schema=schema_text, shots=shots(examples), question=question
    )
