"""Databases by name, the Chinook build, schema reflection, and /schema + /databases on real servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest
from sqlalchemy import create_engine

from pipeline import databases
from pipeline.schema import describe
from samples import chinook
from tests.pg import PostgresServer, content_checksum
from tests.servers import BentoServer

# The canonical Chinook_Sqlite layout: table -> columns, in order.
CANONICAL = {
    "Album": ["AlbumId", "Title", "ArtistId"],
    "Artist": ["ArtistId", "Name"],
    "Customer": [
        "CustomerId",
        "FirstName",
        "LastName",
        "Company",
        "Address",
        "City",
        "State",
        "Country",
        "PostalCode",
        "Phone",
        "Fax",
        "Email",
        "SupportRepId",
    ],
    "Employee": [
        "EmployeeId",
        "LastName",
        "FirstName",
        "Title",
        "ReportsTo",
        "BirthDate",
        "HireDate",
        "Address",
        "City",
        "State",
        "Country",
        "PostalCode",
        "Phone",
        "Fax",
        "Email",
    ],
    "Genre": ["GenreId", "Name"],
    "Invoice": [
        "InvoiceId",
        "CustomerId",
        "InvoiceDate",
        "BillingAddress",
        "BillingCity",
        "BillingState",
        "BillingCountry",
        "BillingPostalCode",
        "Total",
    ],
    "InvoiceLine": ["InvoiceLineId", "InvoiceId", "TrackId", "UnitPrice", "Quantity"],
    "MediaType": ["MediaTypeId", "Name"],
    "Playlist": ["PlaylistId", "Name"],
    "PlaylistTrack": ["PlaylistId", "TrackId"],
    "Track": [
        "TrackId",
        "Name",
        "AlbumId",
        "MediaTypeId",
        "GenreId",
        "Composer",
        "Milliseconds",
        "Bytes",
        "UnitPrice",
    ],
}
CANONICAL_FKS = {
    ("Album", "ArtistId", "Artist.ArtistId"),
    ("Customer", "SupportRepId", "Employee.EmployeeId"),
    ("Employee", "ReportsTo", "Employee.EmployeeId"),
    ("Invoice", "CustomerId", "Customer.CustomerId"),
    ("InvoiceLine", "InvoiceId", "Invoice.InvoiceId"),
    ("InvoiceLine", "TrackId", "Track.TrackId"),
    ("PlaylistTrack", "PlaylistId", "Playlist.PlaylistId"),
    ("PlaylistTrack", "TrackId", "Track.TrackId"),
    ("Track", "AlbumId", "Album.AlbumId"),
    ("Track", "GenreId", "Genre.GenreId"),
    ("Track", "MediaTypeId", "MediaType.MediaTypeId"),
}


@pytest.fixture
def fresh_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Configuration is read once per process: forget it around each test that sets the environment."""
    for var in ("ASKDB_DATABASES", "ASKDB_DATABASES_FILE"):
        monkeypatch.delenv(var, raising=False)
    databases.reset()
    yield monkeypatch
    databases.reset()


# --- the Chinook build ---------------------------------------------------------------------------


def test_built_file_has_the_canonical_tables_and_counts():
    engine = create_engine(f"sqlite:///file:{chinook.default_path()}?mode=ro&uri=true")
    assert chinook.counts(engine) == chinook.EXPECTED_ROWS
    info = describe(databases.get("chinook"))
    assert {t.name: [c.name for c in t.columns] for t in info.tables} == CANONICAL
    fks = {(t.name, f.column, f.references) for t in info.tables for f in t.foreign_keys}
    assert fks == CANONICAL_FKS
    engine.dispose()


def test_build_is_idempotent_and_skips_the_download():
    path = chinook.default_path()
    stamp = path.stat().st_mtime_ns
    missing_cache = path.parent / "no-such-cache"
    assert chinook.build(path, cache=missing_cache) == path
    assert path.stat().st_mtime_ns == stamp and not missing_cache.exists()


def test_rebuild_from_the_cached_sdist_is_identical(tmp_path: Path):
    out = chinook.build(tmp_path / "copy.sqlite", cache=chinook.default_path().parent / ".cache")
    assert [p.name for p in tmp_path.iterdir()] == ["copy.sqlite"]  # atomic: no temp file left
    a, b = (create_engine(f"sqlite:///{p}") for p in (out, chinook.default_path()))
    assert content_checksum(a) == content_checksum(b)


def test_postgres_holds_the_same_rows(postgres: PostgresServer):
    pg = create_engine(postgres.url)
    lite = create_engine(f"sqlite:///file:{chinook.default_path()}?mode=ro&uri=true")
    assert chinook.read_rows(pg) == chinook.read_rows(lite)  # same metadata: Decimals and datetimes alike
    pg.dispose()


# --- configuration -------------------------------------------------------------------------------


def test_default_is_the_embedded_chinook(fresh_config):
    assert databases.names() == [("chinook", "sqlite")]
    db = databases.get("chinook")
    assert (db.name, db.dialect) == ("chinook", "sqlite")
    assert databases.get("chinook") is db  # cached


def test_json_yaml_file_and_env_expansion(fresh_config, tmp_path: Path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("from_file: sqlite:///${ASKDB_TEST_DIR}/x.sqlite\n")
    fresh_config.setenv("ASKDB_TEST_DIR", str(tmp_path))
    fresh_config.setenv("ASKDB_TEST_SECRET", "s3cr3t-value")
    fresh_config.setenv("ASKDB_DATABASES_FILE", str(extra))
    fresh_config.setenv(
        "ASKDB_DATABASES", json.dumps({"warehouse": "postgresql://u:${ASKDB_TEST_SECRET}@h/db"})
    )
    assert dict(databases.names()) == {"chinook": "sqlite", "from_file": "sqlite", "warehouse": "postgresql"}
    assert databases.configured()["from_file"] == f"sqlite:///{tmp_path}/x.sqlite"
    warehouse = databases.get("warehouse")
    assert "s3cr3t-value" not in repr(warehouse) and "s3cr3t-value" not in str(warehouse)
    scrubbed = warehouse.scrub('failed for u:s3cr3t-value@h: server at "h", port 5432')
    assert scrubbed == "failed for u:******: server at ***, port 5432"


def test_yaml_mapping_in_the_variable(fresh_config):
    fresh_config.setenv("ASKDB_DATABASES", "a: sqlite:////tmp/a.sqlite\nb: postgresql+psycopg://h/b\n")
    assert databases.names()[1:] == [("a", "sqlite"), ("b", "postgresql")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[1, 2]", "expected a mapping"),
        ("{bad", "not valid JSON or YAML"),
        ('{"has space": "sqlite:///x"}', "must match"),
        ('{"x": "postgresql://u:${ASKDB_NOT_SET_ANYWHERE}@h/db"}', "ASKDB_NOT_SET_ANYWHERE is not set"),
    ],
)
def test_bad_configuration_is_a_clear_error(fresh_config, value: str, message: str):
    fresh_config.setenv("ASKDB_DATABASES", value)
    with pytest.raises(databases.ConfigError, match=message):
        databases.names()


def test_unsupported_dialect_is_refused_without_echoing_the_url(fresh_config):
    fresh_config.setenv("ASKDB_DATABASES", '{"shop": "mysql://root:hunter2@db/shop"}')
    with pytest.raises(databases.ConfigError, match="not supported") as info:
        databases.get("shop")
    assert "hunter2" not in str(info.value) and "mysql://" not in str(info.value)


def test_unknown_database_names_the_configured_ones(fresh_config):
    with pytest.raises(
        databases.UnknownDatabase, match="unknown database 'nope'; configured databases: chinook"
    ):
        databases.get("nope")


def test_sqlite_engine_opens_read_only_and_never_creates_files(fresh_config, tmp_path: Path):
    fresh_config.setenv("ASKDB_DATABASES", json.dumps({"ghost": f"sqlite:///{tmp_path}/ghost.sqlite"}))
    with pytest.raises(FileNotFoundError, match="make data"), databases.get("ghost").engine.connect():
        pass
    assert not (tmp_path / "ghost.sqlite").exists()


# --- schema --------------------------------------------------------------------------------------


def test_schema_render_related_and_api_shape():
    info = describe(databases.get("chinook"))
    text = info.render(["Album", "PlaylistTrack"])
    assert (
        'CREATE TABLE "Album"' in text
        and '"ArtistId" INTEGER NOT NULL REFERENCES "Artist"("ArtistId")' in text
    )
    assert 'PRIMARY KEY ("PlaylistId", "TrackId")' in text and "Invoice" not in text
    assert "3 rows from Album:" in text and "For Those About To Rock We Salute You" in text
    assert info.related(["Album"]) == {"Album", "Artist", "Track"}
    assert info.related(["InvoiceLine"]) == {"InvoiceLine", "Invoice", "Track"}
    api = info.to_api()
    assert api["db"] == "chinook" and api["dialect"] == "sqlite"
    track = next(t for t in api["tables"] if t["name"] == "Track")
    assert track["columns"][0] == {
        "name": "TrackId",
        "type": "INTEGER",
        "nullable": False,
        "primary_key": True,
    }
    assert {"column": "GenreId", "references": "Genre.GenreId"} in track["foreign_keys"]
    assert all(len(t.samples) == 3 for t in info.tables)


def test_schema_cache_and_refresh():
    db = databases.get("chinook")
    first = describe(db)
    assert describe(db) is first
    refreshed = describe(db, refresh=True)
    assert refreshed is not first and refreshed.to_api() == first.to_api()
    assert describe(db) is refreshed


def test_postgres_schema_matches_sqlite(postgres: PostgresServer):
    pg = databases.open_database("pg_schema", postgres.reader_url)
    lite, remote = describe(databases.get("chinook")).to_api(), describe(pg).to_api()

    def shape(api: dict) -> dict:
        return {
            t["name"]: (
                [(c["name"], c["nullable"], c["primary_key"]) for c in t["columns"]],
                t["foreign_keys"],
            )
            for t in api["tables"]
        }

    assert remote["dialect"] == "postgresql" and shape(remote) == shape(lite)
    assert 'CREATE TABLE "Track"' in describe(pg).render(["Track"])
    pg.engine.dispose()


# --- endpoints -----------------------------------------------------------------------------------


def test_databases_endpoint(client: bentoml.SyncHTTPClient):
    assert client.call("databases") == {"databases": [{"name": "chinook", "dialect": "sqlite"}]}


def test_schema_endpoint(client: bentoml.SyncHTTPClient):
    body = client.call("schema", db="chinook")
    assert body == describe(databases.get("chinook")).to_api()
    assert client.call("schema") == body  # db defaults to chinook


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        ({"db": "nope"}, 404, "configured databases: chinook"),
        ({"db": "x" * 65}, 400, "db"),
        ({"db": ""}, 400, "db"),
        ({"db": 3}, 400, "db"),
    ],
)
def test_schema_endpoint_rejects_bad_names(askdb: BentoServer, payload: dict, status: int, says: str):
    response = httpx.post(f"{askdb.url}/schema", json=payload, timeout=30)
    assert response.status_code == status, response.text
    assert says in response.text and "Traceback" not in response.text


def test_no_endpoint_echoes_a_database_url_or_password(askdb_pg: BentoServer, postgres: PostgresServer):
    secrets = [
        postgres.password,
        postgres.reader_password,
        f":{postgres.port}",
        "postgresql+psycopg",
        "127.0.0.1",
    ]
    responses = [
        httpx.post(f"{askdb_pg.url}/databases", json={}, timeout=30),
        httpx.post(f"{askdb_pg.url}/schema", json={"db": "pg"}, timeout=60),
        httpx.post(f"{askdb_pg.url}/schema", json={"db": "pg_env"}, timeout=60),
        httpx.post(f"{askdb_pg.url}/schema", json={"db": "missing"}, timeout=30),
        httpx.post(f"{askdb_pg.url}/schema", json={"db": "pg_wrong_password"}, timeout=60),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 503]
    assert responses[0].json()["databases"] == [
        {"name": "chinook", "dialect": "sqlite"},
        {"name": "pg", "dialect": "postgresql"},
        {"name": "pg_env", "dialect": "postgresql"},
        {"name": "pg_wrong_password", "dialect": "postgresql"},
    ]
    assert len(responses[1].json()["tables"]) == 11 and responses[1].json()["dialect"] == "postgresql"
    assert "pg, pg_env" in responses[3].text
    assert "'pg_wrong_password' is unavailable" in responses[4].text
    assert "password authentication failed" in responses[4].text
    secrets.append("wrong-" + postgres.password)
    for response in responses:
        assert not [s for s in secrets if s in response.text], response.text
    log = askdb_pg.log_path.read_text(errors="replace")
    assert postgres.password not in log and postgres.reader_password not in log
