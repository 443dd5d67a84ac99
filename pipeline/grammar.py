"""A Lark grammar (llguidance's syntax) for one read-only SELECT over one database's schema.

Grammar-constrained decoding (`AskOptions.grammar`) hands this text to the LLM runner, which masks
every token that would leave the language. What it constrains:
- one statement: `[WITH name AS (query), ...] SELECT ...` with FROM/JOIN ... ON, WHERE, GROUP BY,
  HAVING, ORDER BY, LIMIT/OFFSET, UNION/INTERSECT/EXCEPT, ending at `;` or the end of the text;
- expressions: comparisons, AND/OR/NOT, [NOT] IN (subquery | list), [NOT] LIKE, BETWEEN, IS [NOT]
  NULL, arithmetic, `||`, CASE, EXISTS, CAST, scalar subqueries, aggregates and the dialect's common
  scalar functions, string/number/NULL literals;
- names, the point of it: a table is one of the schema's tables, a column one of the schema's columns,
  bare, or qualified by its own table (`Album.Title`, never `Album.Name`) or by an alias. Aliases and
  CTE names are short (`e`, `m`, `t1`, `T2`) so that a qualifier cannot smuggle in an invented table.
Output-column aliases (`AS total`) are free names but cannot be referenced again (ORDER BY takes
expressions or positions), so invented names never reach the database.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable

from pipeline.schema import SchemaInfo

_FUNCTIONS = {
    "sqlite": [
        "strftime", "date", "time", "datetime", "julianday", "substr", "substring", "lower", "upper",
        "length", "round", "abs", "coalesce", "ifnull", "nullif", "replace", "trim", "ltrim", "rtrim",
        "instr", "printf", "random", "typeof", "min", "max",
    ],
    "postgresql": [
        "date_part", "date_trunc", "to_char", "age", "now", "substr", "substring", "lower", "upper",
        "length", "round", "abs", "coalesce", "nullif", "replace", "trim", "concat", "position",
        "floor", "ceil", "greatest", "least",
    ],
}  # fmt: skip
_AGGREGATES = ["count", "sum", "avg", "min", "max", "group_concat", "string_agg", "total"]
_TYPES = ["integer", "int", "real", "numeric", "text", "varchar", "date", "timestamp", "float", "decimal"]

# Grammar skeleton; identifier rules are appended per schema. Keywords are case-insensitive; spaces
# and single newlines separate tokens ("\n\n" is the generation stop, so it would cut a statement).
_CORE = r"""
start: query ";"?
query: with_clause? compound order_by? limit?
with_clause: "WITH"i cte ("," cte)*
cte: SHORT "AS"i "(" query ")"
compound: select_core (set_op select_core)*
set_op: "UNION"i "ALL"i? | "INTERSECT"i | "EXCEPT"i
select_core: "SELECT"i "DISTINCT"i? sel_item ("," sel_item)* from_clause? where? group_by? having?
sel_item: "*" | qualifier "." "*" | expr ("AS"i OUTNAME)?
from_clause: "FROM"i source (join | "," source)*
source: (table | "(" query ")") ("AS"i? SHORT)? | SHORT
join: join_kind? "JOIN"i source ("ON"i expr)?
join_kind: "LEFT"i "OUTER"i? | "INNER"i | "CROSS"i
where: "WHERE"i expr
group_by: "GROUP"i "BY"i expr ("," expr)*
having: "HAVING"i expr
order_by: "ORDER"i "BY"i order_item ("," order_item)*
order_item: expr ("ASC"i | "DESC"i)? ("NULLS"i ("FIRST"i | "LAST"i))?
limit: "LIMIT"i INT ("OFFSET"i INT)?

expr: conj ("OR"i conj)*
conj: neg ("AND"i neg)*
neg: "NOT"i neg | pred
pred: sum (cmp_op sum)?
    | sum "NOT"i? "IN"i "(" (query | expr ("," expr)*) ")"
    | sum "NOT"i? like_op sum
    | sum "NOT"i? "BETWEEN"i sum "AND"i sum
    | sum "IS"i "NOT"i? "NULL"i
    | "EXISTS"i "(" query ")"
cmp_op: "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
sum: term (("+" | "-" | "||") term)*
term: unary (("*" | "/" | "%") unary)*
unary: "-" unary | postfix
atom: literal
    | column_ref
    | aggregate
    | function
    | "CAST"i "(" expr "AS"i type_name ")"
    | case_expr
    | "(" expr ")"
    | "(" query ")"
aggregate: AGGREGATE "(" ("DISTINCT"i)? expr ")" | COUNT "(" "*" ")"
args: "(" (expr ("," expr)*)? ")"
case_expr: "CASE"i expr? ("WHEN"i expr "THEN"i expr)+ ("ELSE"i expr)? "END"i
type_name: TYPE ("(" INT ("," INT)? ")")?
literal: STRING | INT | DECIMAL | "NULL"i | "TRUE"i | "FALSE"i
column_ref: column | qualified | SHORT "." column

INT: /[0-9]+/
DECIMAL: /[0-9]*\.[0-9]+/
STRING: /'([^'\n]|'')*'/
# no alias starts with "s": a table and its alias may touch, and `Artists` must not read as `Artist s`
SHORT: /[a-rt-z][a-z0-9]?|[A-Z][0-9]|"[A-Za-z][A-Za-z0-9]?"/
OUTNAME: /[A-Za-z_][A-Za-z0-9_]{0,30}/
%ignore /[ \t]+(\n[ \t]*)?|\n[ \t]*/
"""

_DIALECT = {
    "sqlite": 'postfix: atom\nfunction: FUNCTION args\nlike_op: "LIKE"i | "GLOB"i\n',
    "postgresql": (
        'postfix: atom ("::" type_name)*\n'
        'function: FUNCTION args | "EXTRACT"i "(" EXTRACT_FIELD "FROM"i expr ")"\n'
        'like_op: "LIKE"i | "ILIKE"i\n'
        "EXTRACT_FIELD: /(?i:year|month|day|hour|minute|second|dow|doy|week|quarter|epoch)/\n"
    ),
}


def _alternatives(words: list[str], flags: str = "") -> str:
    return " | ".join(json.dumps(w) + flags for w in words)


def _spellings(name: str, dialect: str, quote: Callable[[str], str]) -> list[str]:
    """How `name` may be written: double-quoted always; bare where the dialect reads it as `name`."""
    quoted = '"' + name.replace('"', '""') + '"'
    bare = name if dialect == "sqlite" or quote(name) == name else None
    forms = [quoted] + ([bare] if bare and _plain(bare) else [])
    if dialect == "sqlite" and _plain(name):
        forms += [f"[{name}]", f"`{name}`"]
    return forms


def _plain(name: str) -> bool:
    return name.replace("_", "a").isalnum() and not name[0].isdigit()


def _rule(label: str, spellings: list[str]) -> str:
    return f"{label}: {_alternatives(spellings)}\n"


def build(info: SchemaInfo) -> str:
    """The grammar for `info` (uncached: use `for_schema`)."""
    dialect = info.dialect if info.dialect in _DIALECT else "sqlite"
    q = info.quote
    lines = [_CORE, _DIALECT[dialect]]
    lines.append("COUNT: " + _alternatives(["count"], "i") + "\n")
    lines.append("AGGREGATE: " + _alternatives(_AGGREGATES, "i") + "\n")
    lines.append("FUNCTION: " + _alternatives(_FUNCTIONS[dialect], "i") + "\n")
    lines.append("TYPE: " + _alternatives(_TYPES, "i") + "\n")
    tables, qualified = [], []
    columns: dict[str, None] = {}
    for i, t in enumerate(info.tables):
        tables.append(f"t{i}")
        lines.append(_rule(f"t{i}", _spellings(t.name, dialect, q)))
        names = [s for c in t.columns for s in _spellings(c.name, dialect, q)]
        lines.append(_rule(f"c{i}", names))
        qualified.append(f't{i} "." c{i}')
        columns.update(dict.fromkeys(names))
    lines.append("table: " + " | ".join(tables) + "\n")
    lines.append("qualified: " + " | ".join(qualified) + "\n")
    lines.append("qualifier: table | SHORT\n")
    lines.append(_rule("column", list(columns)))
    return "".join(lines)


def fingerprint(info: SchemaInfo) -> str:
    shape = [(t.name, [c.name for c in t.columns]) for t in info.tables]
    return hashlib.sha256(json.dumps([info.dialect, shape]).encode()).hexdigest()[:16]


_lock = threading.Lock()
_cache: dict[tuple[str, str, str], str] = {}


def for_schema(info: SchemaInfo) -> str:
    """The grammar for `info`, built once per (db, dialect, schema fingerprint): the runner compiles
    a grammar once per distinct text, so the same text must come back for the same schema."""
    key = (info.db, info.dialect, fingerprint(info))
    with _lock:
        if key not in _cache:
            _cache[key] = build(info)
        return _cache[key]
