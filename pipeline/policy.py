"""Per-key data policies: row filters, masked and hidden columns, read from the API key specs.

A key spec (api/auth.py, `ASKDB_API_KEYS` / `ASKDB_API_KEY_FILE`) may carry `policies`, a mapping
database -> table -> rule, and `admin: true` (may approve examples, service.py `/examples`); api/callers.py
reads them into one `DataPolicy` per key and database:

    - name: emea-analyst
      key: ...
      policies:
        chinook:
          Customer: {rows: "Country IN ('Germany', 'France')", mask: [Email, Phone], hide: [Fax]}
          Invoice: {rows: "BillingCountry IN ('Germany', 'France')"}

`rows` is a SQL condition in the database's dialect over that table's own columns; only rows where it
is true exist for the key. A `mask`ed column keeps its name but every value reads `'***'`; a `hide`n
column does not exist for the key at all. A policy covers one table: police every table that holds
the data (a filter on Customer does not filter Invoice). pipeline/enforce.py applies it.

Filters are parsed and checked (one read-only condition, no denied function) once, at start-up: a
bad one raises `PolicyError` naming the key, database and table, and the service does not start.
Keys are matched by their digest, so a policy follows the key whatever its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlglot
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlglot import exp
from sqlglot.errors import SqlglotError

from pipeline.guard import ParseError, Refused, guard, sqlglot_dialect

MASK = "***"  # what a masked column reads: text, so no real value can pass for it


class PolicyError(ValueError):
    """A policy that cannot be enforced; the message names the key, database and table."""


class TableRule(BaseModel):
    """One table's rule as written in a key spec."""

    model_config = ConfigDict(extra="forbid")

    rows: str | None = Field(default=None, min_length=1, max_length=4000)
    mask: list[str] = Field(default_factory=list)
    hide: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class TablePolicy:
    table: str  # as written in the spec
    rows: exp.Expression | None  # parsed once; copied into every query
    mask: frozenset[str]  # lower-case column names
    hide: frozenset[str]

    def column_rule(self, column: str) -> str | None:
        low = column.lower()
        return "hide" if low in self.hide else "mask" if low in self.mask else None


@dataclass(frozen=True)
class DataPolicy:
    """What one key sees of one database."""

    key: str  # the key's name, for messages and the audit trail
    db: str
    dialect: str
    tables: Mapping[str, TablePolicy] = field(default_factory=dict)  # lower-case table name -> rule

    def rule(self, table: str) -> TablePolicy | None:
        # Case-insensitive on purpose: SQLite ignores case even in quoted names, and in PostgreSQL a
        # second table differing only in case is policed too (over-applying can only hide rows).
        return self.tables.get(table.lower())

    @property
    def label(self) -> str:
        return f"the data policy of key '{self.key}' on database '{self.db}'"


def parse_rule(key: str, db: str, dialect: str, table: str, raw: object) -> TablePolicy:
    """A checked TablePolicy, or PolicyError saying which key, database and table is wrong."""
    where = f"key '{key}', database '{db}', table '{table}'"
    try:
        rule = TableRule.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise PolicyError(f"{where}: {problems}") from None
    condition = None
    if rule.rows is not None:
        read = sqlglot_dialect(dialect)
        try:
            condition = sqlglot.parse_one(rule.rows, read=read, into=exp.Condition)
            # the same guard as any query: read-only, no denied function, no system catalog
            # over the tables the filter names: the operator's configuration, not a model's output
            # (that they exist is checked against the database when a query is rewritten)
            probe = exp.select("*").from_(exp.to_table(table)).where(condition.copy())
            named = [t.name for t in probe.find_all(exp.Table)]
            guard(probe.sql(read), dialect, 1, named)
        except (SqlglotError, ParseError, Refused) as err:
            text = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            reason = "it does not parse as a single condition" if "Failed to parse" in text else text
            why = f"row filter {rule.rows!r} is not one read-only condition: {reason}"
            raise PolicyError(f"{where}: {why}") from None
    return TablePolicy(
        table=table,
        rows=condition,
        mask=frozenset(c.lower() for c in rule.mask),
        hide=frozenset(c.lower() for c in rule.hide),
    )
