"""Examples step: the few-shot question→SQL pairs from a per-database bank closest to the question.

Banks are YAML lists of `{question, sql}` in `eval/bank/<db>.yaml` (SQLite dialect; other dialects
get them transpiled with sqlglot), or in the folder ASKDB_EXAMPLES_DIR. Similarity is the cosine of
embeddings from the Embedding runner; a bank's vectors are computed once per process.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlglot
import yaml
from langchain_core.embeddings import Embeddings

from pipeline.guard import DIALECTS

BANK_DIR = Path(
    os.environ.get("ASKDB_EXAMPLES_DIR", Path(__file__).resolve().parent.parent / "eval" / "bank")
)


@dataclass(frozen=True)
class Example:
    question: str
    sql: str


def _read(path: Path, dialect: str) -> list[Example]:
    items = yaml.safe_load(path.read_text()) or []
    out = [Example(str(i["question"]), str(i["sql"])) for i in items]
    if dialect != "sqlite":
        write = DIALECTS.get(dialect, dialect)
        # quoted identifiers: PascalCase names must survive PostgreSQL's case folding
        out = [
            Example(e.question, sqlglot.transpile(e.sql, read="sqlite", write=write, identify=True)[0])
            for e in out
        ]
    return out


def _tables(examples: list[Example]) -> set[str]:
    names: set[str] = set()
    for e in examples:
        try:
            names |= {t.name.lower() for t in sqlglot.parse_one(e.sql).find_all(sqlglot.exp.Table)}
        except sqlglot.errors.ParseError:
            continue
    return names


def load_bank(
    db: str, dialect: str = "sqlite", tables: set[str] | None = None, folder: Path | None = None
) -> list[Example]:
    """The bank named after database `db`; else the first bank whose SQL uses only tables the
    database has (the same data under another name, e.g. Chinook in PostgreSQL); else none."""
    folder = folder or BANK_DIR
    own = folder / f"{db}.yaml"
    if own.is_file():
        return _read(own, dialect)
    if tables is None or not folder.is_dir():
        return []
    have = {t.lower() for t in tables}
    for path in sorted(folder.glob("*.yaml")):
        bank = _read(path, "sqlite")
        if bank and _tables(bank) <= have:
            return _read(path, dialect)
    return []


def cosine_top(query: list[float], matrix: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Indices and scores of the k rows of `matrix` most similar to `query` (vectors are normalised)."""
    if k <= 0 or len(matrix) == 0:
        return []
    scores = matrix @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-scores)[:k]
    return [(int(i), float(scores[i])) for i in order]


class ExampleBank:
    """One database's examples plus their embeddings (computed on first use)."""

    def __init__(self, examples: list[Example], embeddings: Embeddings) -> None:
        self.examples = examples
        self.embeddings = embeddings
        self._matrix: np.ndarray | None = None
        self._lock = asyncio.Lock()

    async def _vectors(self) -> np.ndarray:
        async with self._lock:
            if self._matrix is None:
                vecs = await self.embeddings.aembed_documents([e.question for e in self.examples])
                self._matrix = np.asarray(vecs, dtype=np.float32).reshape(len(self.examples), -1)
            return self._matrix

    async def nearest(self, query_vec: list[float], k: int) -> list[Example]:
        """The k closest examples, most similar last (closest to the question in the prompt)."""
        if k <= 0 or not self.examples:
            return []
        top = cosine_top(query_vec, await self._vectors(), k)
        return [self.examples[i] for i, _ in reversed(top)]
