"""Schema step: tables, columns, keys and a few sample rows, reflected with SQLAlchemy and cached.

`describe(db)` is what the other steps and `/schema` use; `render()` is the compact text a prompt
shows the model (DDL-like lines plus sample rows, identifiers quoted the way the dialect needs).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import MetaData, Table, inspect, select

from pipeline.databases import Database
from pipeline.execute import json_safe

SAMPLE_ROWS = 3
SAMPLE_CHARS = 40  # long texts in sample rows only cost prompt tokens


@dataclass
class ColumnInfo:
    name: str
    type: str
    nullable: bool
    primary_key: bool


@dataclass
class ForeignKey:
    column: str
    references: str  # "Table.Column"

    @property
    def table(self) -> str:
        return self.references.rsplit(".", 1)[0]


@dataclass
class TableInfo:
    name: str
    columns: list[ColumnInfo]
    foreign_keys: list[ForeignKey]
    samples: list[list[Any]] = field(default_factory=list)


@dataclass
class SchemaInfo:
    db: str
    dialect: str
    tables: list[TableInfo]
    quote: Any = field(default=str, repr=False)  # the dialect's identifier quoting
    schema_name: str | None = None  # the default schema the tables were reflected from (main, public)

    def table(self, name: str) -> TableInfo:
        return next(t for t in self.tables if t.name.lower() == name.lower())

    def to_api(self) -> dict:
        """The /schema response body (API.md)."""
        return {
            "db": self.db,
            "dialect": self.dialect,
            "tables": [
                {
                    "name": t.name,
                    "columns": [vars(c).copy() for c in t.columns],
                    "foreign_keys": [
                        {"column": f.column, "references": f.references} for f in t.foreign_keys
                    ],
                }
                for t in self.tables
            ],
        }

    def related(self, tables: list[str] | set[str]) -> set[str]:
        """`tables` plus every table one foreign key away from them (either direction)."""
        wanted = {t.lower() for t in tables}
        out = {t.name for t in self.tables if t.name.lower() in wanted}
        for t in self.tables:
            for fk in t.foreign_keys:
                if t.name.lower() in wanted:
                    out.add(fk.table)
                if fk.table.lower() in wanted:
                    out.add(t.name)
        return out

    def render(self, tables: list[str] | None = None) -> str:
        """CREATE TABLE lines with keys, each followed by its sample rows, for a prompt."""
        wanted = None if tables is None else {t.lower() for t in tables}
        blocks = [self._render_table(t) for t in self.tables if wanted is None or t.name.lower() in wanted]
        return "\n\n".join(blocks)

    def _render_table(self, t: TableInfo) -> str:
        q = self.quote
        refs = {f.column: f for f in t.foreign_keys}
        pk = [c.name for c in t.columns if c.primary_key]
        lines = []
        for c in t.columns:
            line = f"  {q(c.name)} {c.type}"
            if c.primary_key and len(pk) == 1:
                line += " PRIMARY KEY"
            elif not c.nullable:
                line += " NOT NULL"
            if c.name in refs:
                target, column = refs[c.name].references.rsplit(".", 1)
                line += f" REFERENCES {q(target)}({q(column)})"
            lines.append(line)
        if len(pk) > 1:
            lines.append(f"  PRIMARY KEY ({', '.join(q(n) for n in pk)})")
        text = f"CREATE TABLE {q(t.name)} (\n" + ",\n".join(lines) + "\n);"
        if t.samples:
            header = "\t".join(c.name for c in t.columns)
            rows = "\n".join("\t".join(_cell(v) for v in row) for row in t.samples)
            text += f"\n/* {len(t.samples)} rows from {t.name}:\n{header}\n{rows}\n*/"
        return text


def _cell(value: Any) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 3] + "..."


def reflect(db: Database, samples: int = SAMPLE_ROWS) -> SchemaInfo:
    insp = inspect(db.engine)
    metadata = MetaData()
    tables: list[TableInfo] = []
    with db.engine.connect() as conn:
        for name in sorted(insp.get_table_names()):
            pk = set(insp.get_pk_constraint(name).get("constrained_columns") or [])
            columns = [
                ColumnInfo(c["name"], str(c["type"]), bool(c.get("nullable", True)), c["name"] in pk)
                for c in insp.get_columns(name)
            ]
            fks = sorted(
                (
                    ForeignKey(col, f"{fk['referred_table']}.{ref}")
                    for fk in insp.get_foreign_keys(name)
                    for col, ref in zip(fk["constrained_columns"], fk["referred_columns"], strict=True)
                ),
                key=lambda f: (f.column, f.references),  # dialects list them in different orders
            )
            table = Table(name, metadata, autoload_with=conn)
            rows = conn.execute(select(table).limit(samples)).all() if samples else []
            tables.append(TableInfo(name, columns, fks, [[json_safe(v) for v in r] for r in rows]))
        conn.rollback()
    quote = db.engine.dialect.identifier_preparer.quote
    return SchemaInfo(db.name, db.dialect, tables, quote, insp.default_schema_name)


_lock = threading.Lock()
_cache: dict[str, SchemaInfo] = {}


def describe(db: Database, refresh: bool = False) -> SchemaInfo:
    """The schema of `db`, reflected once and cached; `refresh=True` reflects again."""
    with _lock:
        if refresh or db.name not in _cache:
            _cache[db.name] = reflect(db)
        return _cache[db.name]
