"""API keys: where they come from, what each may do, and how a presented key is checked.

Keys come from `ASKDB_API_KEYS` (comma-separated keys, or a JSON list of key specs) and/or
`ASKDB_API_KEY_FILE` (a YAML or JSON file: a list of key specs, or `{"keys": [...]}`). A key spec:

    {"name": "analytics", "key": "...", "databases": ["chinook"],
     "requests_per_minute": 60, "tokens_per_minute": 20000, "max_concurrent": 8}

`sha256` (hex digest of the key) may stand instead of `key`, so a key file need not hold secrets.
`databases` omitted or `["*"]` means every database. Limits omitted fall back to
`ASKDB_RATE_REQUESTS_PER_MIN` / `ASKDB_RATE_TOKENS_PER_MIN` (unset or 0: unlimited); `max_concurrent`
(requests of the key in flight, its body still arriving included) to `ASKDB_MAX_CONCURRENT_PER_KEY`
(unset or 0: the service's cap, ASKDB_MAX_CONCURRENCY).
Only the key's name ever reaches logs and errors, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

import settings

MIN_KEY_CHARS = 16  # shorter keys are guessable; refuse them at start-up rather than serve with them
ALL_DATABASES = "*"


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=64)
    key: SecretStr | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    databases: list[str] | None = None
    requests_per_minute: int | None = Field(default=None, ge=0)
    tokens_per_minute: int | None = Field(default=None, ge=0)
    max_concurrent: int | None = Field(default=None, ge=0)
    # database -> table -> {rows, mask, hide}: checked and enforced by pipeline/policy.py
    policies: dict[str, dict[str, dict[str, object]]] | None = None
    admin: bool = False  # may approve proposed examples (service.py /examples)

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("each key needs exactly one of 'key' or 'sha256'")
        if self.key is not None and len(self.key.get_secret_value()) < MIN_KEY_CHARS:
            raise ValueError(f"API keys must be at least {MIN_KEY_CHARS} characters")
        return self


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    databases: frozenset[str] | None  # None: every database
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None = None  # None: the service's cap

    def may_use(self, db: str) -> bool:
        return self.databases is None or db in self.databases

    def __repr__(self) -> str:  # the digest stays out of reprs and logs too
        return f"ApiKey(name={self.name!r})"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The configured keys. Empty means authentication is off."""

    def __init__(self, keys: list[ApiKey]) -> None:
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError("API key names must be unique")
        if len({k.digest for k in keys}) != len(keys):
            raise ValueError("the same API key is configured twice")
        self.keys = tuple(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def authenticate(self, presented: str | None) -> ApiKey | None:
        """The key matching `presented`, compared in constant time against every configured key."""
        if not presented:
            return None
        candidate = digest(presented)
        found = None
        for key in self.keys:  # no early exit: the time taken says nothing about which key matched
            if hmac.compare_digest(candidate, key.digest):
                found = key
        return found

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KeyRing:
        s = settings.load(env)
        try:
            specs = key_specs(s)
        except ValidationError as exc:
            # The message names the field; pydantic leaves the secret out since it is a SecretStr.
            raise ValueError(f"invalid API key configuration: {_brief(exc)}") from None
        # Limits for keys that set none; ASKDB_MAX_CONCURRENT_PER_KEY unset: the service's own cap.
        defaults = (s.rate_requests_per_min, s.rate_tokens_per_min, s.max_concurrent_per_key)
        return cls([_build(i, spec, defaults) for i, spec in enumerate(specs, start=1)])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (how the openai client sends its key)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _parse_inline(raw: str) -> list[KeySpec]:
    if raw[0] in "[{":
        return _specs(json.loads(raw))
    return [KeySpec(key=part.strip()) for part in raw.split(",") if part.strip()]


def _parse_file(path: Path) -> list[KeySpec]:
    if not path.is_file():
        raise ValueError(f"ASKDB_API_KEY_FILE {path} does not exist")
    return _specs(yaml.safe_load(path.read_text()) or [])


def _specs(data: object) -> list[KeySpec]:
    if isinstance(data, dict) and "keys" in data:
        data = data["keys"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("API key configuration must be a list of key specs or {'keys': [...]}")
    return [KeySpec.model_validate(item) for item in data]


def _build(index: int, spec: KeySpec, defaults: tuple[int | None, int | None, int | None]) -> ApiKey:
    secret = spec.key.get_secret_value() if spec.key is not None else None
    dbs = spec.databases
    return ApiKey(
        name=spec.name or f"key-{index}",
        digest=digest(secret) if secret is not None else bytes.fromhex(spec.sha256 or ""),
        databases=None if dbs is None or ALL_DATABASES in dbs else frozenset(dbs),
        requests_per_minute=_limit(spec.requests_per_minute, defaults[0]),
        tokens_per_minute=_limit(spec.tokens_per_minute, defaults[1]),
        max_concurrent=_limit(spec.max_concurrent, defaults[2]),
    )


def _limit(own: int | None, default: int | None) -> int | None:
    value = default if own is None else own
    return value or None  # 0 means unlimited


def key_specs(s: settings.Settings) -> list[KeySpec]:
    """The key specs of ASKDB_API_KEYS, then ASKDB_API_KEY_FILE (pipeline/policy.py reads the same)."""
    specs: list[KeySpec] = []
    if raw := s.api_keys.strip():
        specs += _parse_inline(raw)
    if path := s.api_key_file.strip():
        specs += _parse_file(Path(path))
    return specs


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, err['loc'])) or 'key'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    )
