"""Explain step: one plain sentence of what a query does, rendered from its syntax tree (sqlglot).

Written from the query, not by the LLM, so it cannot disagree with what ran:

    SELECT COUNT(*) FROM Invoice JOIN Customer ON Invoice.CustomerId = Customer.CustomerId
    WHERE BillingCountry = 'Germany' GROUP BY Country ORDER BY COUNT(*) DESC LIMIT 5
    -> "Counts rows of Invoice joined with Customer on CustomerId, where BillingCountry is 'Germany',
        grouped by Country, ordered by the number of rows descending, first 5."

Names are shown as the query writes them (aliases too, with the table they stand for); expressions
the sentence has no words for are shown as SQL. The LIMIT the guard adds (max_rows + 1) is not a
choice of the query's author and is left out (`cap`).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from pipeline.guard import DIALECTS

MAX_CHARS = 2000  # a deeply nested query still gets a readable (cut) sentence

COMPARISONS = {
    exp.EQ: "is",
    exp.NEQ: "is not",
    exp.GT: "is greater than",
    exp.GTE: "is at least",
    exp.LT: "is less than",
    exp.LTE: "is at most",
}
AGGREGATES = {exp.Sum: "the sum of", exp.Avg: "the average of", exp.Max: "the highest", exp.Min: "the lowest"}
SET_OPERATIONS = {
    exp.Union: "Combines the rows of two queries",
    exp.Intersect: "Keeps the rows two queries both return",
    exp.Except: "Keeps the rows of the first query that the second does not return",
}


class Explainer:
    def __init__(self, dialect: str, cap: int | None) -> None:
        self.dialect, self.cap = DIALECTS.get(dialect, dialect), cap

    def sql(self, node: exp.Expression) -> str:
        return node.sql(dialect=self.dialect)

    # --- values: columns, literals, functions ---
    def value(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Alias):
            return f"{self.value(node.this)} (as {node.alias})"
        if isinstance(node, exp.Star):
            return "every column"
        if isinstance(node, exp.Column) and isinstance(node.this, exp.Star):
            return f"every column of {node.table}"
        if isinstance(node, exp.Column):
            return ".".join(part.name for part in node.parts)  # as written, without quotes
        if isinstance(node, exp.Identifier):
            return node.name
        if isinstance(node, exp.Literal | exp.Null | exp.Boolean):
            return self.sql(node)
        if isinstance(node, exp.Count):
            inner = node.this
            if inner is None or isinstance(inner, exp.Star):
                return "the number of rows"
            if isinstance(inner, exp.Distinct):
                return "the number of distinct " + ", ".join(self.value(e) for e in inner.expressions)
            return f"the number of {self.value(inner)} values"
        for kind, words in AGGREGATES.items():
            if isinstance(node, kind):
                inner = node.this
                if isinstance(inner, exp.Distinct):
                    return f"{words} distinct " + ", ".join(self.value(e) for e in inner.expressions)
                return f"{words} {self.value(inner)}"
        if isinstance(node, exp.Subquery):
            return f"({self.query(node.this, nested=True)})"
        if isinstance(node, exp.Paren):
            return self.value(node.this)
        return self.sql(node)

    # --- conditions ---
    def condition(self, node: exp.Expression) -> str:
        if isinstance(node, exp.Paren):
            return self.condition(node.this)
        if isinstance(node, exp.And):
            return " and ".join(self._part(p, exp.Or) for p in node.flatten())
        if isinstance(node, exp.Or):
            return " or ".join(self._part(p, exp.And) for p in node.flatten())
        negated = bool(node.args.get("negate"))  # sqlglot keeps NOT LIKE / NOT IN / IS NOT as a flag
        if isinstance(node, exp.Not):
            node, negated = node.this, True
            if not isinstance(node, exp.In | exp.Like | exp.ILike | exp.Between | exp.Is | exp.Exists):
                return f"not ({self.condition(node)})"
        return self.predicate(node, negated)

    def predicate(self, node: exp.Expression, negated: bool = False) -> str:
        no = "not " if negated else ""
        for kind, words in COMPARISONS.items():
            if isinstance(node, kind):
                return f"{self.value(node.this)} {words} {self.value(node.expression)}"
        if isinstance(node, exp.Like | exp.ILike):
            case = " (any case)" if isinstance(node, exp.ILike) else ""
            verb = "does not match" if negated else "matches"
            return f"{self.value(node.this)} {verb} {self.value(node.expression)}{case}"
        if isinstance(node, exp.In):
            if node.args.get("query"):
                return f"{self.value(node.this)} is {no}among {self.value(node.args['query'])}"
            values = ", ".join(self.value(e) for e in node.expressions)
            return f"{self.value(node.this)} is {no}one of {values}"
        if isinstance(node, exp.Between):
            low, high = self.value(node.args["low"]), self.value(node.args["high"])
            return f"{self.value(node.this)} is {no}between {low} and {high}"
        if isinstance(node, exp.Is):
            return f"{self.value(node.this)} is {no}empty"
        if isinstance(node, exp.Exists):
            return f"there is {'no' if negated else 'a'} row in ({self.query(node.this, nested=True)})"
        return self.value(node)

    def _part(self, node: exp.Expression, other: type[exp.Expression]) -> str:
        text = self.condition(node)
        return f"({text})" if isinstance(node, other) else text

    # --- sources ---
    def table(self, node: exp.Expression) -> str:
        alias = node.alias
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            name = ".".join(p for p in (node.db, node.name) if p)
            return name if not alias or alias == node.name else f"{name} (as {alias})"
        if isinstance(node, exp.Subquery):
            inner = f"the rows of ({self.query(node.this, nested=True)})"
            if isinstance(node.this, exp.Table):  # FROM (a JOIN b ...)
                inner = self.table(node.this) + self.joins(node.this)
            return (f"{inner} as {alias}" if alias else inner) + self.joins(node)
        if isinstance(node, exp.Lateral):
            return "for each row, " + self.value(node.this)
        return self.sql(node)

    def join(self, join: exp.Join) -> str:
        target = self.table(join.this)
        side, kind = (join.side or "").lower(), (join.kind or "").lower()
        if join.method and join.method.upper() == "NATURAL":
            return f" naturally joined with {target} (on the columns both share)"
        verb = f"{side}-joined with" if side in ("left", "right", "full") else "joined with"
        if join.args.get("using"):
            return f" {verb} {target} on " + _and([self.value(c) for c in join.args["using"]])
        on = join.args.get("on")
        if on is None:
            return f" combined with every row of {target}" if kind in ("cross", "") else f" {verb} {target}"
        if isinstance(on, exp.EQ) and all(isinstance(s, exp.Column) for s in (on.this, on.expression)):
            if on.this.name == on.expression.name:
                return f" {verb} {target} on {on.this.name}"
            return f" {verb} {target} on {self.value(on.this)} = {self.value(on.expression)}"
        return f" {verb} {target} on {self.condition(on)}"

    def joins(self, node: exp.Expression) -> str:
        return ",".join(self.join(j) for j in node.args.get("joins") or [])

    # --- queries ---
    def query(self, node: exp.Expression, nested: bool = False) -> str:
        prefix = ""
        with_ = node.args.get("with_")
        if with_:
            defs = "; ".join(f"{c.alias} defined as ({self.query(c.this, True)})" for c in with_.expressions)
            prefix = f"with {defs}: "
        if isinstance(node, exp.SetOperation):
            words = SET_OPERATIONS.get(type(node), "Combines two queries")
            if isinstance(node, exp.Union):
                words += " (keeping duplicates)" if not node.args.get("distinct") else " (without duplicates)"
            text = (
                f"{words}: first, {self.query(node.this, True)}; second, {self.query(node.expression, True)}"
            )
            text += self.tail(node)
        elif isinstance(node, exp.Select):
            text = self.select(node)
        elif isinstance(node, exp.Subquery):
            return self.query(node.this, nested)
        else:
            text = self.sql(node)
        text = prefix + text
        return _lower_first(text) if nested else text[:1].upper() + text[1:]

    def select(self, node: exp.Select) -> str:
        items = node.expressions
        plain = [e.this if isinstance(e, exp.Alias) else e for e in items]
        rows = (
            len(items) == 1
            and isinstance(plain[0], exp.Count)
            and self.value(plain[0]) == "the number of rows"
        )
        if rows and not isinstance(items[0], exp.Alias):
            text = "counts rows"
        else:
            verb = "lists distinct" if node.args.get("distinct") else "lists"
            if all(isinstance(p, exp.AggFunc) for p in plain) and not node.args.get("group"):
                verb = "finds"
            text = f"{verb} {_and([self.value(e) for e in items])}"
        source = node.args.get("from_")
        if source is not None:
            text += " of " + self.table(source.this) + self.joins(node)
        if where := node.args.get("where"):
            text += ", where " + self.condition(where.this)
        if group := node.args.get("group"):
            text += ", grouped by " + _and([self.value(e) for e in group.expressions])
        if having := node.args.get("having"):
            text += ", keeping groups where " + self.condition(having.this)
        return text + self.tail(node)

    def tail(self, node: exp.Expression) -> str:
        text = ""
        if order := node.args.get("order"):
            way = {True: " descending", False: " ascending"}
            keys = [self.value(o.this) + way[bool(o.args.get("desc"))] for o in order.expressions]
            text += ", ordered by " + _and(keys)
        limit = node.args.get("limit")
        count = limit.expression if isinstance(limit, exp.Limit) else None
        if isinstance(count, exp.Literal) and not count.is_string:
            n = int(count.this) if count.this.isdigit() else None
            if n is not None and (self.cap is None or n < self.cap):
                text += ", first row only" if n == 1 else f", first {n}"
        if offset := node.args.get("offset"):
            text += f", skipping {self.sql(offset.expression)}"
        return text


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def explain(
    sql: str, dialect: str = "sqlite", cap: int | None = None, policed: list[str] | None = None, key: str = ""
) -> str:
    """The sentence for `sql`; `policed` tables (read through `key`'s data policy) are said so."""
    try:
        tree = sqlglot.parse_one(sql, read=DIALECTS.get(dialect, dialect))
    except sqlglot.errors.SqlglotError:
        return ""
    text = Explainer(dialect, cap).query(tree)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 1] + "…"
    text += "."
    if policed:
        whose = f" of key '{key}'" if key else ""
        text += (
            f" {_and(policed)} {'is' if len(policed) == 1 else 'are'} read through the data policy{whose}."
        )
    return text
