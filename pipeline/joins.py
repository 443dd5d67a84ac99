"""Join conditions that compare a column with itself, re-pointed at the table they were meant for.

The 135M model often writes `FROM Track JOIN Genre ON Genre.GenreId = Genre.GenreId`: always true,
so the query runs (no error reaches the repair loop) and returns a cross product. When exactly one
other table in the same SELECT has that column, the condition can only have meant that table's
column (`Track.GenreId = Genre.GenreId`). Otherwise the query is left as it is.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from pipeline.guard import DIALECTS
from pipeline.schema import SchemaInfo


def sources_of(select: exp.Select) -> dict[str, exp.Table]:
    """Name the SELECT's own FROM/JOIN tables go by (alias or name, lower-cased) -> the table."""
    tables = []
    if from_ := select.args.get("from_") or select.args.get("from"):  # renamed in sqlglot 30
        tables.append(from_.this)
    tables += [j.this for j in select.args.get("joins") or []]
    return {t.alias_or_name.lower(): t for t in tables if isinstance(t, exp.Table)}


def qualifier_of(table: exp.Table) -> exp.Identifier:
    """What a column names this table by: its alias, else its name (keeping the source's quoting)."""
    return table.args["alias"].this if table.alias else table.this


def _columns(info: SchemaInfo) -> dict[str, set[str]]:
    return {t.name.lower(): {c.name.lower() for c in t.columns} for t in info.tables}


def _self_comparisons(join: exp.Join) -> list[exp.EQ]:
    on = join.args.get("on")
    if on is None:
        return []
    out = []
    for eq in on.find_all(exp.EQ):
        left, right = eq.left, eq.right
        if (
            isinstance(left, exp.Column)
            and isinstance(right, exp.Column)
            and left.name.lower() == right.name.lower()
            and left.table.lower() == right.table.lower()
        ):
            out.append(eq)
    return out


def fix_self_comparisons(sql: str, dialect: str, info: SchemaInfo) -> str:
    """`sql` with each `ON T.c = T.c` re-pointed at the one other table in scope that has `c`."""
    read = DIALECTS.get(dialect, dialect)
    try:
        tree = sqlglot.parse_one(sql, read=read)
    except sqlglot.errors.SqlglotError:
        return sql
    columns, changed = _columns(info), False
    for select in tree.find_all(exp.Select):
        sources = sources_of(select)
        for join in select.args.get("joins") or []:
            for eq in _self_comparisons(join):
                col, qualifier = eq.left.name.lower(), eq.left.table.lower()
                others = [
                    table
                    for name, table in sources.items()
                    if name != qualifier and col in columns.get(table.name.lower(), set())
                ]
                if len(others) == 1:  # keeps the source's own spelling (quoted names stay quoted)
                    qualifier_id = qualifier_of(others[0])
                    eq.left.replace(exp.Column(this=eq.left.this.copy(), table=qualifier_id.copy()))
                    changed = True
    return tree.sql(dialect=read) if changed else sql


def remaining_self_comparisons(sql: str, dialect: str) -> list[str]:
    """The `T.c = T.c` join conditions in `sql` (as SQL text): always true, so never what was meant."""
    read = DIALECTS.get(dialect, dialect)
    try:
        tree = sqlglot.parse_one(sql, read=read)
    except sqlglot.errors.SqlglotError:
        return []
    return [eq.sql(dialect=read) for join in tree.find_all(exp.Join) for eq in _self_comparisons(join)]
