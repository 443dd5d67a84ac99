"""Guard step: only one read-only query reaches a database, with a bounded LIMIT.

The SQL is parsed with sqlglot in the target dialect and rendered again from the syntax tree (without
comments), so what runs is exactly what was checked. Accepted: one SELECT, WITH ... SELECT or set
operation (UNION / INTERSECT / EXCEPT). Refused: everything else, and inside an accepted query any
data-modifying node (a PostgreSQL CTE can hold a DELETE), SELECT ... INTO, FOR UPDATE/SHARE.
Allow-lists, not deny-lists, decide what a query may read: FROM/JOIN name only the database's own
tables (the caller passes the reflected names, what /schema shows) or CTEs the query defines, a
table-valued function only when listed, and a function only when sqlglot models it (an exp.Func
subclass, minus those that report on the server or the session) or it is on a short list of
harmless named ones. The old deny rules (system catalogs, pg_*/sqlite_*/pragma_* names, file and
server functions) stay as a second line.

The LIMIT is added or clamped to max_rows + 1: the one extra row lets execute tell the caller the
result was truncated without ever reading more than that.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.scope import traverse_scope

DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}

# Nodes that read nothing: they write, change the session, or leave the database.
FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,  # sqlglot's fallback for anything it does not model (VACUUM, CALL, DO, LOCK, ...)
    exp.Copy,
    exp.Set,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Use,
    exp.LoadData,
    exp.Into,  # SELECT ... INTO creates a table
    exp.Lock,  # FOR UPDATE / FOR SHARE take row locks
    exp.ReadCSV,
    exp.ReadParquet,
    exp.ToFile,
    exp.NextValueFor,
)

# Functions refused by name, whatever sqlglot makes of them: files, server control, sleeping,
# other connections, SQL executed from a string (it would bypass this guard), sequences, settings.
DENIED_FUNCTIONS = frozenset(
    {
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "zeroblob",
        "randomblob",
        "sqlite_dbpage",
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "cursor_to_xml",
        "table_to_xml",
        "database_to_xml",
        "schema_to_xml",
        "set_config",
        "current_setting",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "version",
        "current_version",
        "inet_server_addr",
        "inet_server_port",
    }
)
DENIED_PREFIXES = ("pg_", "lo_", "dblink", "txid_", "sqlite_", "read_", "write_", "file_")

# Functions sqlglot does not model (parsed as Anonymous) are refused unless known to be harmless.
SAFE_ANONYMOUS = frozenset(
    {
        # SQLite
        "julianday",
        "datetime",
        "time",
        "unixepoch",
        "printf",
        "format",
        "total",
        "quote",
        "likelihood",
        "likely",
        "unlikely",
        "soundex",
        "octet_length",
        "ifnull",
        "iif",
        "instr",
        "mod",
        "pi",
        "log10",
        "log2",
        # PostgreSQL
        "age",
        "date_part",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_interval",
        "justify_hours",
        "justify_interval",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "localtimestamp",
        "btrim",
        "lpad",
        "rpad",
        "regexp_matches",
        "regexp_split_to_array",
        "string_to_array",
        "array_to_string",
        "cardinality",
        "char_length",
        "character_length",
        "bit_length",
        "translate",
        "to_char",
        "percent_rank",
        "cume_dist",
        "nth_value",
        "every",
        "bool_or",
        "bool_and",
        "corr",
        "covar_pop",
        "covar_samp",
        "regr_slope",
        "regr_intercept",
        "scale",
        "div",
        "cbrt",
        "degrees",
        "radians",
        "gcd",
        "lcm",
        "num_nulls",
        "num_nonnulls",
    }
)

# Modelled functions that report on the server, the session or the connection, not on the data
# (current_user, current_schema, current_database, version, ...); the clock ones are data enough.
_CLOCK = frozenset(
    {"CurrentDate", "CurrentDatetime", "CurrentTime", "CurrentTimestamp", "CurrentTimestampLTZ"}
)
SERVER_FUNCTIONS: frozenset[type[exp.Func]] = frozenset(
    f for f in exp.ALL_FUNCTIONS if f.__name__.startswith(("Current", "Session")) and f.__name__ not in _CLOCK
)
KNOWN_FUNCTIONS: frozenset[type[exp.Func]] = frozenset(exp.ALL_FUNCTIONS) - SERVER_FUNCTIONS
# Table-valued functions a FROM may call: they only reshape their arguments.
TABLE_FUNCTIONS = frozenset({"json_each", "json_tree", "generate_series", "exploding_generate_series"})
# Schema qualifiers that mean "this database's own tables" (SQLite's main, PostgreSQL's public).
OWN_SCHEMAS = frozenset({"", "main", "public"})

_TOKEN_REPR = re.compile(r"<Token [^>]*?text: ([^,]*),[^>]*>")
QUERY_STARTS = frozenset({"SELECT", "WITH", "("})
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "sqlite_temp_master"})
SYSTEM_PREFIXES = ("pg_", "sqlite_", "pragma_")  # catalogs, statistics views, table-valued pragmas


class ParseError(ValueError):
    """The SQL does not parse in the dialect."""

    def __init__(self, message: str, sql: str) -> None:
        super().__init__(message)
        self.sql = sql


class Refused(ValueError):
    """The SQL parses but is not one read-only query; the message says why."""

    def __init__(self, message: str, sql: str) -> None:
        super().__init__(message)
        self.sql = sql


def sqlglot_dialect(dialect: str) -> str:
    """sqlglot's name for a SQLAlchemy dialect name ("postgresql" -> "postgres")."""
    try:
        return DIALECTS[dialect]
    except KeyError:
        raise ValueError(f"unsupported dialect {dialect!r}; supported: {sorted(DIALECTS)}") from None


def _refuse_unparsed(sql: str, dialect: str) -> None:
    """For SQL sqlglot cannot parse: refuse what is clearly not one query (say so rather than
    'does not parse'), judged from the tokens; return when it looks like a broken SELECT."""
    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except SqlglotError:
        return
    words = [t.text.upper() for t in tokens]
    if words and words[0] not in QUERY_STARTS:
        raise Refused(f"only a SELECT query is allowed, not {words[0][:40]}", sql)
    statements = " ".join(words).strip("; ").split(";")
    if len([s for s in statements if s.strip()]) > 1:
        raise Refused(f"exactly one statement is allowed, found {len(statements)}", sql)


def _describe(exc: SqlglotError) -> str:
    errors = getattr(exc, "errors", None) or []
    if errors and errors[0].get("description"):
        e = errors[0]
        what = _TOKEN_REPR.sub(r"'\1'", e["description"])  # sqlglot prints whole token objects
        near = f" near {e['highlight']!r}" if e.get("highlight") else ""
        return f"{what}{near} (line {e.get('line')}, column {e.get('col')})"[:300]
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def _parse(sql: str, dialect: str) -> exp.Expression:
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except SqlglotError as exc:
        _refuse_unparsed(sql, dialect)
        raise ParseError(f"SQL does not parse as {dialect}: {_describe(exc)}", sql) from None
    if not statements:
        raise ParseError("no SQL statement found", sql)
    if len(statements) > 1:
        raise Refused(f"exactly one statement is allowed, found {len(statements)}", sql)
    return statements[0]


def _function_name(node: exp.Func) -> str:
    return (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()


def _check_function(node: exp.Func, sql: str) -> None:
    name = _function_name(node)
    if name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES) or type(node) in SERVER_FUNCTIONS:
        raise Refused(f"function {name}() is not allowed: it reaches files, the server or the session", sql)
    if isinstance(node, exp.Anonymous):
        known = name in SAFE_ANONYMOUS or name in TABLE_FUNCTIONS
    else:
        known = type(node) in KNOWN_FUNCTIONS
    if not known:
        raise Refused(f"function {name}() is not on the list of allowed functions", sql)


def _cte_references(root: exp.Expression) -> set[int]:
    """ids of the Table nodes that name a CTE visible where they stand (sqlglot's scope rules: a
    non-recursive CTE does not see itself, so `WITH t AS (SELECT * FROM t)` reads a real table t)."""
    try:
        scopes = traverse_scope(root)
    except SqlglotError:
        return set()  # every name is then checked as a table: stricter, never looser
    # By the table's own name, never its alias: `FROM cte, secret AS cte` must not pass `secret` off.
    return {
        id(table)
        for scope in scopes
        for table in scope.tables
        if not table.db and table.name in scope.cte_sources
    }


def _check_table(node: exp.Table, sql: str, tables: frozenset[str], ctes: set[int]) -> None:
    if isinstance(node.this, exp.Func):  # a table-valued function: pragma_table_info(...), pg_ls_dir(...)
        name = _function_name(node.this)
        if name not in TABLE_FUNCTIONS:
            raise Refused(f"table-valued function {name}() is not allowed; query the database's tables", sql)
        return
    if node.args.get("rows_from"):
        return  # ROWS FROM (f(...), ...): each function is a Table node of its own
    schema, name = (node.db or "").lower(), node.name.lower()
    if schema in SYSTEM_SCHEMAS or name.startswith(SYSTEM_PREFIXES) or name in SYSTEM_SCHEMAS:
        raise Refused(f"system table {node.sql()} is not allowed; query the application's tables", sql)
    if node.catalog:
        raise Refused(f"table {node.sql()} names another database; only this database can be queried", sql)
    if id(node) in ctes:
        return
    if schema not in OWN_SCHEMAS:
        raise Refused(
            f"table {node.sql()} is in schema {node.db}; only this database's tables can be queried", sql
        )
    if name not in tables:
        raise Refused(f"table {node.name} is not one of this database's tables (see /schema)", sql)


def check(tree: exp.Expression, sql: str, tables: Collection[str]) -> exp.Expression:
    """Raise Refused unless `tree` is one read-only query over `tables` (the database's own table
    names; case-insensitive); return the query node (parentheses removed)."""
    root = tree
    while isinstance(root, exp.Subquery) and not root.alias:
        root = root.this
    if not isinstance(root, exp.Select | exp.SetOperation):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise Refused(f"only a SELECT query is allowed, not {kind}", sql)
    own = frozenset(t.lower() for t in tables)
    ctes = _cte_references(root)
    for node in root.walk():
        if isinstance(node, FORBIDDEN_NODES):
            what = "SELECT ... INTO" if isinstance(node, exp.Into) else node.key.upper()
            if isinstance(node, exp.Lock):
                what = "a locking clause (FOR UPDATE/SHARE)"
            raise Refused(f"{what} is not allowed: queries must be read-only", sql)
        if isinstance(node, exp.Func):
            _check_function(node, sql)
        elif isinstance(node, exp.DataType) and node.sql(dialect="postgres").lower().startswith("reg"):
            # PostgreSQL's object-identifier types (regclass, regproc, ...) look names up in the catalogs
            raise Refused(f"type {node.sql(dialect='postgres')} reads the system catalogs", sql)
        elif isinstance(node, exp.Table):
            _check_table(node, sql, own, ctes)
    return root


def _literal_int(node: Any) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return int(node.this)
        except ValueError:
            return None
    return None


def clamp_limit(root: exp.Expression, cap: int) -> None:
    """Set the outermost LIMIT to min(its literal value, cap); anything not a literal becomes cap."""
    current = root.args.get("limit")
    n = None
    if isinstance(current, exp.Limit):
        n = _literal_int(current.expression)
    elif isinstance(current, exp.Fetch):
        n = _literal_int(current.args.get("count"))
    keep = n if n is not None and 0 <= n <= cap else cap
    root.set("limit", exp.Limit(expression=exp.Literal.number(keep)))


def guard(sql: str, dialect: str, max_rows: int, tables: Collection[str]) -> str:
    """The safe form of `sql` (one read-only query over `tables`, LIMIT <= max_rows + 1) or Refused /
    ParseError. `tables`: the database's table names, as reflected (pipeline/schema.py)."""
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    read = sqlglot_dialect(dialect)
    root = check(_parse(sql, read), sql, tables)
    clamp_limit(root, max_rows + 1)
    return root.sql(dialect=read, comments=False)
