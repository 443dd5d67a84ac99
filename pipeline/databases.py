"""Databases by name: the embedded Chinook SQLite file plus any configured SQLAlchemy URL.

Configuration (read once per process):
- `ASKDB_DATABASES`: a JSON or YAML mapping `name: URL`;
- `ASKDB_DATABASES_FILE`: a YAML file with the same mapping.
`${VAR}` inside a URL is taken from the environment, so secrets stay in the environment. Every engine
is read-only at the connection level; URLs and passwords never leave this module (repr, errors).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

import settings
from samples import chinook

DEFAULT = "chinook"
# Read-only enforcement exists for these; another dialect could be written to, so it is refused.
SUPPORTED = ("sqlite", "postgresql")
CONNECT_TIMEOUT_S = settings.get().db_connect_timeout_s
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UnknownDatabase(LookupError):
    """A name that is not configured; the message lists the configured names."""


class ConfigError(ValueError):
    """Bad database configuration; the message never contains a URL or a secret."""


@dataclass(frozen=True)
class Database:
    name: str
    dialect: str
    engine: Engine = field(repr=False, compare=False)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def scrub(self, text: str) -> str:
        """`text` with this database's URL, password and host replaced by ***."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def error_message(self, err: BaseException, limit: int = 500) -> str:
        """The driver's own message (not SQLAlchemy's wrapper with SQL and links), first line, scrubbed."""
        orig = getattr(err, "orig", None) or err
        first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        return self.scrub(first)[:limit]


def _expand(value: str, where: str) -> str:
    def sub(match: re.Match) -> str:
        var = match.group(1)
        if var not in os.environ:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        return os.environ[var]

    return _VAR.sub(sub, value)


def _parse_mapping(text: str, where: str) -> dict[str, str]:
    try:
        data = yaml.safe_load(text)  # JSON is YAML, so one parser reads both
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid JSON or YAML ({exc.__class__.__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{where}: expected a mapping of database name to SQLAlchemy URL string")
    return {str(k): v for k, v in data.items()}


def configured() -> dict[str, str]:
    """name -> URL (with ${VAR} expanded) from the environment, plus the embedded default."""
    urls = {DEFAULT: f"sqlite:///{chinook.default_path()}"}
    sources: list[tuple[str, str]] = []
    s = settings.load()  # read at the first use, then cached until reset()
    if path := s.databases_file:
        sources.append((Path(path).read_text(), "ASKDB_DATABASES_FILE"))
    if text := s.databases:
        sources.append((text, "ASKDB_DATABASES"))
    for text, where in sources:
        for name, url in _parse_mapping(text, where).items():
            if not NAME.match(name):
                raise ConfigError(f"{where}: database name {name!r} must match {NAME.pattern}")
            urls[name] = _expand(url, f"{where}[{name}]")
    return urls


def _sqlite_engine(url: URL) -> Engine:
    path = url.database
    if not path or path == ":memory:":
        raise ConfigError("a SQLite database needs a file path")
    resolved = Path(path).resolve()

    def connect() -> sqlite3.Connection:
        if not resolved.is_file():  # mode=ro never creates a file, but say which step is missing
            raise FileNotFoundError(f"SQLite file {resolved.name} does not exist (run `make data`)")
        conn = sqlite3.connect(f"{resolved.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")  # a second lock on top of the read-only open
        return conn

    # One connection per use: progress handlers (timeouts) are per connection and must not leak.
    return create_engine("sqlite://", creator=connect, poolclass=NullPool)


def _postgres_engine(url: URL) -> Engine:
    # Every transaction on these sessions starts READ ONLY; statements are also time-limited in execute.
    # connect_timeout: an unreachable host fails the request in seconds instead of hanging it.
    args = {"options": "-c default_transaction_read_only=on", "connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(url, connect_args=args, pool_pre_ping=True, pool_size=4)


def open_database(name: str, url: str) -> Database:
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"database {name!r}: not a valid SQLAlchemy URL") from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED:
        raise ConfigError(f"database {name!r}: dialect {dialect!r} is not supported; use one of {SUPPORTED}")
    engine = _sqlite_engine(parsed) if dialect == "sqlite" else _postgres_engine(parsed)
    full = parsed.render_as_string(hide_password=False)
    # Longest first, so a URL is hidden whole before its parts. The host (where the server lives) only
    # where drivers quote it: a short name like "db" must not blank out every "db" in a message.
    hosts = (f'"{parsed.host}"', f"@{parsed.host}") if parsed.host else ()
    found = {s for s in (url, full, parsed.password, *hosts) if s}
    secrets = tuple(sorted(found, key=len, reverse=True))
    return Database(name=name, dialect=dialect, engine=engine, secrets=secrets)


_lock = threading.Lock()
_cache: dict[str, Database] = {}
_urls: dict[str, str] | None = None


def _config() -> dict[str, str]:
    global _urls
    if _urls is None:
        _urls = configured()
    return _urls


def names() -> list[tuple[str, str]]:
    """(name, dialect) for every configured database, default first."""
    return [(name, make_url(url).get_backend_name()) for name, url in _config().items()]


def get(name: str) -> Database:
    """The named database (engine created once per process)."""
    with _lock:
        if name in _cache:
            return _cache[name]
        urls = _config()
        if name not in urls:
            allowed = ", ".join(urls)
            raise UnknownDatabase(f"unknown database {name[:64]!r}; configured databases: {allowed}")
        db = _cache[name] = open_database(name, urls[name])
        return db


def reset() -> None:
    """Forget configuration and engines (tests, or after changing the environment)."""
    global _urls
    with _lock:
        for db in _cache.values():
            db.engine.dispose()
        _cache.clear()
        _urls = None
