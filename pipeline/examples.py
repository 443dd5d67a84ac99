"""Examples step: the few-shot question→SQL pairs from a per-database bank closest to the question.

Banks are YAML lists of `{question, sql}` in `eval/bank/<db>.yaml` (SQLite dialect; other dialects
get them transpiled with sqlglot), or in the folder ASKDB_EXAMPLES_DIR. Similarity is the cosine of
embeddings from the Embedding runner; a bank's vectors are computed once per process.

Verified examples (pairs a person approved for this database, pipeline/example_store.py) are ranked
with the static bank, and also get `VERIFIED_SLOTS` places of their own on top of the `k` nearest:
the static bank is written to cover every query shape, so on similarity alone an approved pair
mostly ties with a bank example of the same shape and loses (6 of 24 test prompts showed one,
eval/README.md "Learning"). An approved pair adds what the bank lacks, the right tables and
columns for the questions this database's users actually ask, so it must reach the prompt.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlglot
import yaml
from langchain_core.embeddings import Embeddings

import settings
from pipeline.guard import DIALECTS

BANK_DIR = settings.get().examples_path()


VERIFIED_SLOTS = 2  # approved examples shown in addition to the k nearest (when the bank has them)


@dataclass(frozen=True)
class Example:
    question: str
    sql: str
    verified: bool = False  # approved by a person for this database (not from the static bank)


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
        except sqlglot.errors.SqlglotError:
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


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_WORD = re.compile(r"[A-Za-z][A-Za-z/&-]*|\d+(?:\.\d+)?")


def skeleton(question: str, vocabulary: set[str]) -> str:
    """The question's shape with its content masked: quoted values, numbers, proper names and
    words naming tables or columns. "How many tracks are there?" and "How many albums are there?"
    share a skeleton (and a query shape) that "How many tracks are in each genre?" does not."""
    text = _QUOTED.sub(" value ", question)
    out = []
    for n, word in enumerate(_WORD.findall(text)):
        low = word.lower()
        if word[0].isdigit():
            out.append("number")
        elif low in vocabulary or low.rstrip("s") in vocabulary or low.removesuffix("es") in vocabulary:
            out.append("thing")
        elif n > 0 and word[0].isupper():
            out.append("name")
        else:
            out.append(low)
    return " ".join(out)


def vocabulary(tables: list[tuple[str, list[str]]]) -> set[str]:
    """Lower-case table and column names (and their CamelCase parts) a question may mention."""
    words: set[str] = set()
    for table, columns in tables:
        for name in (table, *columns):
            words.add(name.lower())
            words.update(p.lower() for p in re.findall(r"[A-Z][a-z]+", name) if len(p) > 3)
    return words - {"name", "names"}


class ExampleBank:
    """One database's examples plus their embeddings (computed on first use).

    Ranking mixes the similarity of the questions and of their skeletons (`skeleton_weight`): a
    135M model copies the closest example's SQL shape, so the shape has to be the right one.
    Verified examples (`Example.verified`) get up to `verified_slots` extra places (module docstring)."""

    def __init__(
        self,
        examples: list[Example],
        embeddings: Embeddings,
        words: set[str] | None = None,
        verified_slots: int = VERIFIED_SLOTS,
    ) -> None:
        self.examples = examples
        self.verified_slots = verified_slots
        self.embeddings = embeddings
        self.words = words or set()
        self._matrix: np.ndarray | None = None
        self._skeletons: np.ndarray | None = None
        self._lock = asyncio.Lock()

    async def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        async with self._lock:
            if self._matrix is None or self._skeletons is None:
                n = len(self.examples)
                texts = [e.question for e in self.examples]
                texts += [skeleton(e.question, self.words) for e in self.examples]
                vecs = np.asarray(await self.embeddings.aembed_documents(texts), dtype=np.float32)
                self._matrix, self._skeletons = vecs[:n], vecs[n:]
            return self._matrix, self._skeletons

    async def nearest(
        self, question: str, query_vec: list[float], k: int, skeleton_weight: float = 0.0
    ) -> list[Example]:
        """The k closest examples plus the closest verified ones not among them (up to
        `VERIFIED_SLOTS` verified in all), most similar last (closest to the question in the prompt)."""
        if k <= 0 or not self.examples:
            return []
        matrix, skeletons = await self._vectors()
        scores = matrix @ np.asarray(query_vec, dtype=np.float32)
        if skeleton_weight > 0:
            skel = await self.embeddings.aembed_query(skeleton(question, self.words))
            scores = (1 - skeleton_weight) * scores + skeleton_weight * (skeletons @ np.asarray(skel))
        order = [int(i) for i in np.argsort(-scores)]
        top = order[:k]
        wanted = self.verified_slots - sum(self.examples[i].verified for i in top)
        extra = [i for i in order[k:] if self.examples[i].verified][: max(0, wanted)]
        # stable sort by score: the k nearest keep their order, a tied verified one goes before them
        chosen = sorted(extra + top[::-1], key=lambda i: float(scores[i]))
        return [self.examples[i] for i in chosen]
