"""Enforce a data policy on a guarded query by rewriting its syntax tree (sqlglot) before it runs.

Every reference to a policed table, in any scope (joins, subqueries, CTEs, each branch of a UNION,
LATERAL, EXISTS, scalar subqueries, schema-qualified or quoted in any case), is replaced by a derived
table under the reference's own alias or name:

    FROM Customer AS c   ->   FROM (SELECT "CustomerId", ..., '***' AS "Email" FROM Customer
                                    WHERE Country IN ('Germany', 'France') OFFSET 0) AS c

so everything after it (`SELECT *`, aggregates, window functions, NATURAL JOIN / USING, correlated
references) sees only the allowed rows, masked values, and no hidden column: a reference to a hidden
column is an unknown column and the database refuses the query. Nothing about the query has to be
understood for this to hold, which is why it is sound for SQL no test foresaw. The OFFSET makes the
derived table a security barrier: the planner may not evaluate the query's conditions on rows the
filter removes (an error would tell they exist).

A policed table in a place a derived table cannot stand (an index hint naming it, ...) is refused
with `PolicyRefused`, and so is a policy naming a table or column the database lacks (a typo must
not turn a filter off). After the rewrite, every policed table left in the tree must be one this
module put there, or the query is refused: it never runs unfiltered.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from pipeline.databases import Database
from pipeline.execute import QueryTimeout, SQLError, execute
from pipeline.guard import Refused, sqlglot_dialect
from pipeline.policy import MASK, DataPolicy, TablePolicy
from pipeline.schema import ColumnInfo, ForeignKey, SchemaInfo, TableInfo

# Table arguments that belong outside the derived table (they act on its result).
OUTER_ARGS = ("alias", "joins", "laterals", "pivots")
_filters_lock = threading.Lock()
_views_lock = threading.Lock()  # held while a view reads samples through enforce (which takes the other)


class PolicyRefused(Refused):
    """The query cannot be run under the caller's data policy; the message names the policy."""


def _table_info(info: SchemaInfo, policy: DataPolicy, rule: TablePolicy) -> TableInfo:
    matches = [t for t in info.tables if t.name.lower() == rule.table.lower()]
    if not matches:
        raise PolicyRefused(f"{policy.label} names table {rule.table}, which the database does not have", "")
    exact = [t for t in matches if t.name == rule.table]
    table = (exact or matches)[0]
    have = {c.name.lower() for c in table.columns}
    for column in sorted(rule.mask | rule.hide):
        if column not in have:  # `info` is the reflected schema, never a view
            what = f"column {table.name}.{column}"
            raise PolicyRefused(f"{policy.label} names {what}, which does not exist", "")
    return table


def projection(table: TableInfo, rule: TablePolicy) -> list[exp.Expression]:
    """The derived table's columns: allowed ones as they are, masked ones as '***', hidden ones left out."""
    out: list[exp.Expression] = []
    for column in table.columns:
        kind = rule.column_rule(column.name)
        if kind == "hide":
            continue
        if kind == "mask":
            out.append(exp.alias_(exp.Literal.string(MASK), column.name, quoted=True))
        else:
            out.append(exp.column(column.name, quoted=True))
    return out


def _in_table_position(table: exp.Table) -> bool:
    parent = table.parent
    if isinstance(parent, exp.From | exp.Join):
        return True
    return isinstance(parent, exp.Subquery) and parent.this is table  # FROM (Customer)


_filters: dict[tuple[int, int], tuple[TablePolicy, SchemaInfo, exp.Identifier, exp.Expression | None]] = {}


def _filter(
    info: SchemaInfo, policy: DataPolicy, rule: TablePolicy, table: TableInfo
) -> tuple[exp.Identifier, exp.Expression | None]:
    """(inner alias, row filter) with every column qualified by that alias and every table by its
    schema: dropped into someone else's query, the filter cannot resolve a name to a table, CTE or
    column the query defines (a CTE called Customer, an outer column matching a typo)."""
    key = (id(rule), id(info))
    cached = _filters.get(key)
    if cached and cached[0] is rule and cached[1] is info:
        return cached[2], cached[3]
    read = sqlglot_dialect(info.dialect)
    source = exp.table_(table.name, db=info.schema_name, quoted=True)
    source.set("alias", exp.TableAlias(this=exp.to_identifier(table.name, quoted=True)))
    template = exp.select("*").from_(source)
    if rule.rows is not None:
        template = template.where(rule.rows.copy())
    mapping = {t.name: {c.name: c.type for c in t.columns} for t in info.tables}
    try:
        qualified = qualify(
            template,
            schema=MappingSchema(mapping, dialect=read, normalize=read == "sqlite"),
            dialect=read,
            db=info.schema_name,
            expand_stars=False,
            validate_qualify_columns=True,
        )
    except OptimizeError as err:
        raise PolicyRefused(
            f"{policy.label}: the row filter of {table.name} does not resolve: {err}", ""
        ) from None
    alias = qualified.args["from_"].this.args["alias"].this
    where = qualified.args.get("where")
    entry = (rule, info, alias, where.this if where else None)
    with _filters_lock:
        _filters[key] = entry
    return alias, entry[3]


def _derived(
    table: exp.Table,
    columns: list[exp.Expression],
    alias: exp.Identifier,
    rows: exp.Expression | None,
    dialect: str,
) -> exp.Subquery:
    # joins hanging off the table (`FROM (Customer JOIN Invoice ...)`) move, not copy: a policed table
    # among them is still the node the rewrite visits next
    moved = {arg: table.args.get(arg) for arg in ("joins", "laterals", "pivots")}
    outer_alias = table.args.get("alias") or exp.TableAlias(this=table.this.copy())
    for arg in OUTER_ARGS:
        table.set(arg, None)
    inner_table = table.copy()
    inner_table.set("alias", exp.TableAlias(this=alias.copy()))
    inner = exp.select(*columns).from_(inner_table)
    if rows is not None:
        inner = inner.where(rows.copy())
    # A security barrier: an OFFSET keeps both planners from merging the query's own conditions into
    # this subquery, where they could run on filtered rows first and leak them through an error
    # (`1 / (CASE WHEN Country = 'USA' THEN 0 ELSE 1 END)`: "division by zero" means a USA row exists).
    # SQLite takes OFFSET only after a LIMIT; -1 is no limit.
    inner = (inner.limit(-1) if dialect == "sqlite" else inner).offset(0)
    # the reference's own alias, or its own name (quoted as written), so later references still resolve
    derived = exp.Subquery(this=inner, alias=outer_alias.copy())
    for arg, nodes in moved.items():
        if nodes:
            derived.set(arg, nodes)
    return derived


def _policed(node: exp.Table, policy: DataPolicy) -> TablePolicy | None:
    return policy.rule(node.name) if isinstance(node.this, exp.Identifier) else None


def apply_policy(tree: exp.Expression, policy: DataPolicy, info: SchemaInfo, sql: str = "") -> list[str]:
    """Rewrite `tree` in place; return the policed tables it references (in order, once each)."""
    targets = [(t, rule) for t in tree.find_all(exp.Table) if (rule := _policed(t, policy))]
    placed: set[int] = set()
    touched: dict[str, None] = {}
    for table, rule in targets:
        if not _in_table_position(table):
            where = type(table.parent).__name__ if table.parent else "its position"
            raise PolicyRefused(f"{policy.label} cannot be applied to {table.sql()} inside {where}", sql)
        info_table = _table_info(info, policy, rule)
        alias, rows = _filter(info, policy, rule, info_table)
        derived = _derived(table, projection(info_table, rule), alias, rows, info.dialect)
        placed.update(id(n) for n in derived.this.walk())
        touched[info_table.name] = None
        table.replace(derived)
    # Post-condition: every policed table still in the query is one of the derived tables' own.
    for node in tree.find_all(exp.Table):
        if _policed(node, policy) and id(node) not in placed:
            raise PolicyRefused(f"{policy.label}: {node.sql()} could not be policed", sql)
    return list(touched)


def enforce(sql: str, policy: DataPolicy, info: SchemaInfo) -> tuple[str, list[str]]:
    """(the query rewritten under `policy`, the policed tables it reads); PolicyRefused if it cannot be.
    `info` is the database's reflected schema (describe), never a `view` of it."""
    read = sqlglot_dialect(policy.dialect)
    try:
        tree = sqlglot.parse_one(sql, read=read)
    except sqlglot.errors.SqlglotError as err:  # guarded SQL parses; anything else is not run
        raise PolicyRefused(f"{policy.label}: the query does not parse ({type(err).__name__})", sql) from None
    tables = apply_policy(tree, policy, info, sql)
    return (tree.sql(dialect=read, comments=False) if tables else sql), tables


def view(
    info: SchemaInfo, policy: DataPolicy, db: Database | None = None, timeout_s: float = 5.0
) -> SchemaInfo:
    """The schema as the key sees it: hidden columns (and keys on them) gone; sample rows of policed
    tables read again through the policy (filtered rows never shown, masked values '***')."""
    hidden = {
        (t.name.lower(), c.name.lower())
        for t in info.tables
        if (rule := policy.rule(t.name))
        for c in t.columns
        if rule.column_rule(c.name) == "hide"
    }

    def visible(table: str, column: str) -> bool:
        return (table.lower(), column.lower()) not in hidden

    tables = []
    for t in info.tables:
        rule = policy.rule(t.name)
        if rule is None:
            keys = [f for f in t.foreign_keys if visible(f.table, f.references.rsplit(".", 1)[1])]
            tables.append(replace(t, foreign_keys=keys))
            continue
        _table_info(info, policy, rule)  # a typo in the policy fails here too, not silently
        columns = [ColumnInfo(**vars(c)) for c in t.columns if visible(t.name, c.name)]
        keys = [
            ForeignKey(f.column, f.references)
            for f in t.foreign_keys
            if visible(t.name, f.column) and visible(f.table, f.references.rsplit(".", 1)[1])
        ]
        samples = _samples(info, policy, t, db, timeout_s) if db is not None and t.samples else []
        tables.append(TableInfo(t.name, columns, keys, samples))
    return replace(info, tables=tables)


def policed_api(info: SchemaInfo, policy: DataPolicy) -> dict:
    """The /schema body as the key sees it: hidden columns left out, masked ones marked `masked`."""
    body = view(info, policy).to_api()
    for table in body["tables"]:
        rule = policy.rule(table["name"])
        for column in table["columns"] if rule else []:
            if rule.column_rule(column["name"]) == "mask":
                column["masked"] = True
    return body


def _samples(
    info: SchemaInfo, policy: DataPolicy, table: TableInfo, db: Database, timeout_s: float
) -> list[list]:
    read = sqlglot_dialect(policy.dialect)
    probe = exp.select("*").from_(exp.table_(table.name, quoted=True)).limit(len(table.samples))
    sql, _ = enforce(probe.sql(read), policy, info)
    try:
        return execute(db, sql, len(table.samples), timeout_s).rows
    except (QueryTimeout, SQLError):
        return []  # no samples rather than unpoliced ones


_views: dict[tuple[str, str], tuple[SchemaInfo, DataPolicy, SchemaInfo]] = {}


def cached_view(info: SchemaInfo, policy: DataPolicy, db: Database) -> SchemaInfo:
    """`view` once per (schema reflection, policy): its sample rows cost a query per policed table."""
    key = (policy.key, policy.db)
    with _views_lock:
        entry = _views.get(key)
        if entry is None or entry[0] is not info or entry[1] is not policy:
            entry = _views[key] = (info, policy, view(info, policy, db))
        return entry[2]
