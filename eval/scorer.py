"""Execution accuracy: run the gold SQL, compare its result set with the one /ask returned.

Values are normalised (numbers rounded to 2 decimals, so 3 == 3.0 and float sums agree); rows are
compared as multisets, in order only when the question asks for one (`ordered: true`); columns may
come in any order. `lenient` also accepts extra predicted columns when some of them match exactly.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from pipeline.databases import Database

ROOT = Path(__file__).resolve().parent
TESTSET_DIR = ROOT / "testset"
BANK_DIR = ROOT / "bank"


ITEM_FIELDS = ("id", "question", "sql", "level")


class TestsetError(ValueError):
    """A test set that cannot be scored: the message names the file, the item and the field."""


def load_testset(db: str = "chinook", path: Path | str | None = None) -> list[dict]:
    """The database's test set, or the one at `path` (a held-out set in the same format: a YAML
    list of {id, question, sql, level, ordered?}), checked for the fields every item needs."""
    source = Path(path) if path else TESTSET_DIR / f"{db}.yaml"
    items = yaml.safe_load(source.read_text())
    if not isinstance(items, list) or not items:
        raise TestsetError(f"{source}: expected a non-empty list of test items")
    for n, item in enumerate(items):
        missing = [f for f in ITEM_FIELDS if not isinstance(item, dict) or not item.get(f)]
        if missing:
            raise TestsetError(f"{source}: item {n} lacks {', '.join(missing)}")
    ids = [i["id"] for i in items]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise TestsetError(f"{source}: ids repeat ({', '.join(repeated)})")
    return items


def load_bank(db: str = "chinook") -> list[dict]:
    return yaml.safe_load((BANK_DIR / f"{db}.yaml").read_text())


def normalise_question(q: str) -> str:
    return " ".join(q.lower().replace("?", " ").replace(".", " ").split())


def normalise_sql(sql: str) -> str:
    return " ".join(sql.lower().replace(";", " ").split())


def overlap(bank: list[dict], testset: list[dict]) -> list[str]:
    """Test questions that also appear in the bank (same question or same SQL): must be empty."""
    questions = {normalise_question(b["question"]) for b in bank}
    sqls = {normalise_sql(b["sql"]) for b in bank}
    return [
        t["id"]
        for t in testset
        if normalise_question(t["question"]) in questions or normalise_sql(t["sql"]) in sqls
    ]


def broken_gold(db: Database, testset: list[dict]) -> list[str]:
    """ "id: reason" for each test item whose gold SQL fails or returns no rows on `db`."""
    out = []
    for item in testset:
        try:
            rows = run_gold(db, item["sql"])[1]
        except Exception as exc:  # any database error: the item cannot be scored
            out.append(f"{item['id']}: {type(exc).__name__}")
            continue
        if not rows:
            out.append(f"{item['id']}: no rows")
    return out


def run_gold(db: Database, sql: str) -> tuple[list[str], list[list[Any]]]:
    with db.engine.connect() as conn:
        result = conn.execute(text(sql))
        columns = list(result.keys())
        rows = [list(r) for r in result.fetchall()]
        conn.rollback()
    return columns, rows


def _value(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int | float):
        return round(float(v), 2)
    try:  # numbers that came back as text (Decimal over JSON, for example)
        return round(float(v), 2) if isinstance(v, str) and v.strip() and v.strip()[0] in "-0123456789" else v
    except ValueError:
        return v


def _row(row: list[Any]) -> tuple:
    # column order free: a row is the sorted multiset of its values
    return tuple(sorted(repr(_value(v)) for v in row))


def same_result(pred: list[list[Any]], gold: list[list[Any]], ordered: bool = False) -> bool:
    p, g = [_row(r) for r in pred], [_row(r) for r in gold]
    return p == g if ordered else Counter(p) == Counter(g)


def lenient_match(pred: list[list[Any]], gold: list[list[Any]], ordered: bool = False) -> bool:
    """Exact match, or some subset of the predicted columns (as many as gold has) matches exactly."""
    if same_result(pred, gold, ordered):
        return True
    if not pred or not gold or len(pred) != len(gold):
        return False
    width, want = len(pred[0]), len(gold[0])
    if width <= want or width > 8:
        return False
    return any(
        same_result([[r[i] for i in cols] for r in pred], gold, ordered)
        for cols in itertools.combinations(range(width), want)
    )
