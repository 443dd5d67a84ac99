"""Conditions on the wrong column, re-pointed at the column that holds the value the question names.

The 135M model mixes up sibling columns: `WHERE BillingCity = 'Germany'` for "billed to Germany".
The query runs and returns nothing. When the literal is not in the column the model chose, but is in
exactly one other text column of the tables in the same SELECT, that column is what was meant. Each
check is a one-row lookup on the read-only connection, under the same time limit as the query.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp

from pipeline.databases import Database
from pipeline.enforce import PolicyRefused, enforce
from pipeline.execute import QueryTimeout, SQLError, execute
from pipeline.guard import DIALECTS
from pipeline.joins import qualifier_of, sources_of
from pipeline.policy import DataPolicy
from pipeline.schema import SchemaInfo, TableInfo, describe

_TEXT_TYPES = ("CHAR", "TEXT", "CLOB", "STRING")
MAX_LOOKUPS = 24  # per query: a few tables of a few text columns each


def _text_columns(table: TableInfo) -> list[str]:
    return [c.name for c in table.columns if any(t in c.type.upper() for t in _TEXT_TYPES)]


class _Lookup:
    """Does `table.column` hold `value`? Cached, and bounded by MAX_LOOKUPS. Under a data policy the
    lookup sees what the caller sees: a filtered row or masked value must not steer the query."""

    def __init__(
        self, db: Database, info: SchemaInfo, timeout_s: float, policy: DataPolicy | None = None
    ) -> None:
        self.db, self.info, self.timeout_s, self.policy = db, info, timeout_s, policy
        self.seen: dict[tuple[str, str, str], bool] = {}

    def holds(self, table: str, column: str, value: exp.Literal) -> bool | None:
        key = (table, column, value.this)
        if key not in self.seen:
            if len(self.seen) >= MAX_LOOKUPS:
                return None
            q = self.info.quote
            dialect = DIALECTS.get(self.db.dialect, self.db.dialect)
            probe = f"SELECT 1 FROM {q(table)} WHERE {q(column)} = {value.sql(dialect=dialect)} LIMIT 1"
            try:
                if self.policy is not None:
                    probe, _ = enforce(probe, self.policy, describe(self.db))
                self.seen[key] = bool(execute(self.db, probe, 1, self.timeout_s).rows)
            except (QueryTimeout, SQLError, PolicyRefused):
                return None
        return self.seen[key]


def _owner(column: exp.Column, scope: dict[str, exp.Table], info: SchemaInfo) -> TableInfo | None:
    """The schema table a column reference belongs to, when it can be told."""
    if column.table:
        source = scope.get(column.table.lower())
        return _table(info, source.name) if source is not None else None
    owners = [t for s in scope.values() if (t := _table(info, s.name)) and _has(t, column.name)]
    return owners[0] if len(owners) == 1 else None


def _table(info: SchemaInfo, name: str) -> TableInfo | None:
    return next((t for t in info.tables if t.name.lower() == name.lower()), None)


def _has(table: TableInfo, column: str) -> bool:
    return any(c.name.lower() == column.lower() for c in table.columns)


def fix_value_columns(
    sql: str, db: Database, info: SchemaInfo, timeout_s: float, policy: DataPolicy | None = None
) -> str:
    """`sql` with each `col = 'text'` whose value `col` lacks re-pointed at the one column holding it."""
    read = DIALECTS.get(db.dialect, db.dialect)
    try:
        tree = sqlglot.parse_one(sql, read=read)
    except sqlglot.errors.SqlglotError:
        return sql
    lookup, changed = _Lookup(db, info, timeout_s, policy), False
    for select in tree.find_all(exp.Select):
        where = select.args.get("where")
        if where is None:
            continue
        scope = sources_of(select)
        for eq in where.find_all(exp.EQ):
            column, value = eq.left, eq.right
            if not (isinstance(column, exp.Column) and isinstance(value, exp.Literal) and value.is_string):
                continue
            owner = _owner(column, scope, info)
            if owner is None or lookup.holds(owner.name, column.name, value) is not False:
                continue
            holders = [
                (alias, name)
                for alias, source in scope.items()
                if (table := _table(info, source.name))
                for name in _text_columns(table)
                if lookup.holds(table.name, name, value)
            ]
            if len(holders) == 1:
                alias, name = holders[0]
                qualifier = qualifier_of(scope[alias])
                qualified = column.table or len(scope) > 1
                # quoted like the model's column: PostgreSQL folds unquoted PascalCase names
                ident = exp.to_identifier(name, quoted=column.this.quoted)
                new = exp.Column(this=ident, table=qualifier.copy() if qualified else None)
                column.replace(new)
                changed = True
    return tree.sql(dialect=read) if changed else sql


# Values a question names: quoted text, or a run of capitalised words after the first word
# ("for the USA", "the artist Iron Maiden").
_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_CAPITALISED = re.compile(r"(?<!^)\b[A-Z][\w-]*(?:\s+[A-Z][\w-]*)*")


def named_values(question: str) -> list[str]:
    quoted = [a or b for a, b in _QUOTED.findall(question)]
    bare = _QUOTED.sub(" ", question).strip()
    return list(dict.fromkeys(quoted + [m.group(0) for m in _CAPITALISED.finditer(bare)]))


def _named_before(holders: list[tuple[exp.Table, str]], value: str, question: str) -> list:
    """The holders whose table or column the question names just before the value ("the artist
    'Iron Maiden'", "the city of Prague"): Chinook has an album *and* an artist called Iron Maiden."""
    before = question[: question.find(value)].lower()
    words = {w.rstrip("s") for w in re.findall(r"[a-z]+", before)[-3:]}
    return [(src, col) for src, col in holders if {src.name.lower(), col.lower()} & words]


def add_missing_values(
    sql: str,
    question: str,
    db: Database,
    info: SchemaInfo,
    timeout_s: float,
    policy: DataPolicy | None = None,
) -> str:
    """`sql` with `col = 'value'` added for each value the question names but the query never uses,
    when exactly one text column of the query's tables holds it (the model dropped the filter)."""
    read = DIALECTS.get(db.dialect, db.dialect)
    try:
        tree = sqlglot.parse_one(sql, read=read)
    except sqlglot.errors.SqlglotError:
        return sql
    if not isinstance(tree, exp.Select):
        return sql  # UNION and friends: which branch would take it is a guess
    used = {lit.this.lower() for lit in tree.find_all(exp.Literal) if lit.is_string}
    scope, lookup, changed = sources_of(tree), _Lookup(db, info, timeout_s, policy), False
    for value in named_values(question):
        if any(value.lower() in u for u in used):
            continue  # already filtered on (LIKE patterns included)
        literal = exp.Literal.string(value)
        holders = [
            (source, name)
            for source in scope.values()
            if (table := _table(info, source.name))
            for name in _text_columns(table)
            if lookup.holds(table.name, name, literal)
        ]
        holders = holders if len(holders) == 1 else _named_before(holders, value, question)
        if len(holders) == 1:
            source, name = holders[0]
            qualifier = qualifier_of(source)
            quoted = qualifier.quoted  # PostgreSQL's PascalCase names arrive quoted
            column = exp.Column(this=exp.to_identifier(name, quoted=quoted), table=qualifier.copy())
            tree = tree.where(exp.EQ(this=column, expression=literal), copy=False)
            changed = True
    return tree.sql(dialect=read) if changed else sql
