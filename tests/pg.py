"""A throwaway PostgreSQL 15 for tests: Debian's initdb + pg_ctl in a temp dir on a free port.

Password authentication over TCP (so URLs really carry a password), a unix socket inside the temp
dir, the Chinook data loaded through the same metadata as the SQLite file, and a `reader` role that
may only SELECT. PostgreSQL refuses to run as root, so as root (CI) it runs as the `postgres` user.

    with PostgresServer() as pg:
        engine = create_engine(pg.url)          # the owner (superuser)
        reader = pg.reader_url                  # SELECT-only role
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, create_engine, select, text

from pipeline import databases
from samples import chinook
from tests.servers import free_port

BIN = Path(os.environ.get("ASKDB_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"  # the Debian package's system user


class PostgresServer:
    def __init__(self, database: str = "chinook") -> None:
        self.port = free_port()
        self.database = database
        self.password = "own-" + secrets.token_urlsafe(12)
        self.reader_password = "read-" + secrets.token_urlsafe(12)
        self.tmp: Path | None = None

    def url_for(self, user: str, password: str, database: str | None = None) -> str:
        db = database or self.database
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{db}"

    @property
    def url(self) -> str:
        return self.url_for("askdb", self.password)

    @property
    def reader_url(self) -> str:
        return self.url_for("reader", self.reader_password)

    def _run(self, *args: str) -> None:
        cmd = [str(BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=self.tmp)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    def start(self) -> PostgresServer:
        if not (BIN / "initdb").exists():
            raise RuntimeError(f"{BIN}/initdb not found: install Debian's postgresql package (see .ci/run)")
        self.tmp = Path(tempfile.mkdtemp(prefix="askdb-pg-"))
        pwfile = self.tmp / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.tmp, RUN_AS)
            shutil.chown(pwfile, RUN_AS)
        data = str(self.tmp / "data")
        self._run(
            "initdb",
            "-D",
            data,
            "-U",
            "askdb",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-locale",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
        )
        # Durability is pointless for a throwaway cluster; fsync=off keeps loading fast on 2 cores.
        opts = (
            f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        )
        self._run("pg_ctl", "-D", data, "-o", opts, "-l", str(self.tmp / "log"), "-w", "-t", "60", "start")
        self._create()
        return self

    def _create(self) -> None:
        admin = create_engine(self.url_for("askdb", self.password, "postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.database}"')
            conn.exec_driver_sql(f"CREATE ROLE reader LOGIN PASSWORD '{self.reader_password}'")
        admin.dispose()
        chinook.load_postgres(self.url)
        owner = create_engine(self.url)
        with owner.begin() as conn:
            conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{self.database}" TO reader')
            conn.exec_driver_sql("GRANT USAGE ON SCHEMA public TO reader")
            conn.exec_driver_sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
        owner.dispose()

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.tmp / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.tmp / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> PostgresServer:
        try:
            return self.start()
        except Exception:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def content_checksum(engine: Engine) -> str:
    """sha256 over every table's name, columns and rows (sorted): equal iff nothing changed."""
    digest = hashlib.sha256()
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        for table in sorted(metadata.tables.values(), key=lambda t: t.name):
            digest.update(f"{table.name}({', '.join(f'{c.name} {c.type}' for c in table.columns)})".encode())
            rows = sorted(repr(tuple(r)) for r in conn.execute(select(table)))
            digest.update("\n".join(rows).encode())
        if engine.dialect.name == "postgresql":  # roles and functions too: a guard escape could add one
            extra = "SELECT rolname FROM pg_roles UNION ALL SELECT proname FROM pg_proc ORDER BY 1"
            digest.update(repr(conn.execute(text(extra)).all()).encode())
        conn.rollback()
    return digest.hexdigest()


def db_checksum(db: databases.Database) -> str:
    """content_checksum, and for SQLite also the file's bytes."""
    digest = content_checksum(db.engine)
    if db.dialect == "sqlite":
        digest += hashlib.sha256(chinook.default_path().read_bytes()).hexdigest()
    return digest


@pytest.fixture(scope="module", params=["sqlite", "postgresql"], name="db")
def chinook_db(request: pytest.FixtureRequest) -> Iterator[databases.Database]:
    """Chinook in both dialects. On PostgreSQL as the owner, a superuser: only the guard and the
    read-only session stand between it and the data. Import it into a test module to use `db`."""
    if request.param == "sqlite":
        yield databases.get("chinook")
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        database = databases.open_database("pg_owner", pg.url)
        yield database
        database.engine.dispose()
