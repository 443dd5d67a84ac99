"""Select step: for a large schema, keep only the tables a question needs.

Tables are ranked by embedding similarity between the question and a one-line description of each
table; the top ones are kept, plus the tables the retrieved examples' SQL uses, plus the tables on
foreign-key paths that connect them (so every kept table can be joined). Small schemas
(at most `min_tables` tables) are shown whole: selection would only risk dropping a needed table.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np
import sqlglot
from langchain_core.embeddings import Embeddings
from sqlglot import exp

import settings
from pipeline.examples import Example, cosine_top
from pipeline.guard import sqlglot_dialect
from pipeline.schema import SchemaInfo

MIN_TABLES = settings.get().select_min_tables
TOP_K = settings.get().select_top_k


def describe_table(schema: SchemaInfo, name: str) -> str:
    t = schema.table(name)
    return f"{t.name}: " + ", ".join(c.name for c in t.columns)


def tables_in(sql: str, dialect: str = "sqlite") -> set[str]:
    try:
        tree = sqlglot.parse_one(sql, read=sqlglot_dialect(dialect))
    except sqlglot.errors.SqlglotError:  # TokenError too (unterminated quotes in a reply)
        return set()
    return {t.name for t in tree.find_all(exp.Table)}


def _graph(schema: SchemaInfo) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {t.name: set() for t in schema.tables}
    for t in schema.tables:
        for fk in t.foreign_keys:
            if fk.table in graph and fk.table != t.name:
                graph[t.name].add(fk.table)
                graph[fk.table].add(t.name)
    return graph


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    prev: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            while node is not None:
                path.append(node)
                node = prev[node]
            return path
        for nxt in sorted(graph[node]):
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return []


def connect(schema: SchemaInfo, tables: set[str]) -> set[str]:
    """`tables` plus the tables on shortest foreign-key paths linking each to the first one."""
    graph = _graph(schema)
    ordered = sorted(tables)
    out = set(tables)
    for other in ordered[1:]:
        out.update(_path(graph, ordered[0], other))
    return out


class TableSelector:
    def __init__(self, embeddings: Embeddings, min_tables: int = MIN_TABLES, top_k: int = TOP_K) -> None:
        self.embeddings = embeddings
        self.min_tables = min_tables
        self.top_k = top_k
        self._cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._lock = asyncio.Lock()  # concurrent first requests embed the tables once, not each

    async def _matrix(self, schema: SchemaInfo) -> np.ndarray:
        key = (schema.db, tuple(t.name for t in schema.tables))
        async with self._lock:
            if key not in self._cache:
                texts = [describe_table(schema, t.name) for t in schema.tables]
                vectors = await self.embeddings.aembed_documents(texts)
                self._cache[key] = np.asarray(vectors, dtype=np.float32)
        return self._cache[key]

    async def select(
        self, query_vec: list[float], schema: SchemaInfo, examples: list[Example] = ()
    ) -> list[str] | None:
        """Names of the tables to show, or None for the whole schema."""
        if len(schema.tables) <= self.min_tables:
            return None
        names = [t.name for t in schema.tables]
        known = {n.lower(): n for n in names}
        top = cosine_top(query_vec, await self._matrix(schema), self.top_k)
        keep = {names[i] for i, _ in top}
        for ex in examples[-1:]:  # the closest example's tables: it shows the likely join
            keep |= {known[t.lower()] for t in tables_in(ex.sql, schema.dialect) if t.lower() in known}
        keep = connect(schema, keep)
        return [n for n in names if n in keep]
