"""Who is calling: each configured key's data policies (pipeline/policy.py) and admin flag.

Read once when `bentoml serve` imports service.py (`Callers.from_env()`): a filter that does not
parse or is not read-only stops it before any worker starts, with a message naming the key,
database and table (in a worker, BentoML would restart it forever).
"""

from __future__ import annotations

from collections.abc import Mapping

import settings
from api import auth
from pipeline import databases
from pipeline.policy import DataPolicy, PolicyError, parse_rule


class Callers:
    """Data policies and the admin flag of every configured key, looked up by the key's digest."""

    def __init__(self, policies: dict[bytes, dict[str, DataPolicy]], admins: frozenset[bytes]) -> None:
        self.policies, self.admins = policies, admins

    def policy(self, key: auth.ApiKey | None, db: str) -> DataPolicy | None:
        """The policy of `key` on database `db`; None when the key has none there (or auth is off)."""
        return None if key is None else self.policies.get(key.digest, {}).get(db)

    def is_admin(self, key: auth.ApiKey | None) -> bool:
        return key is not None and key.digest in self.admins

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Callers:
        auth.KeyRing.from_env(env)  # its own clear errors first (short keys, duplicates, bad fields)
        # the very parser api/auth uses, in its order, so a key and its policies can never be read apart
        specs = auth.key_specs(settings.load(env))
        try:  # only when there are policies: a broken database setting is otherwise a 503 per request
            dialects = dict(databases.names()) if any(s.policies for s in specs) else {}
        except (databases.ConfigError, OSError) as err:
            raise PolicyError(f"the data policies cannot be checked: {err}") from None
        policies: dict[bytes, dict[str, DataPolicy]] = {}
        admins: set[bytes] = set()
        for index, spec in enumerate(specs, start=1):
            name = spec.name or f"key-{index}"  # the name api/auth gives an unnamed key
            secret = spec.key.get_secret_value() if spec.key is not None else None
            digest = auth.digest(secret) if secret is not None else bytes.fromhex(spec.sha256 or "")
            if spec.admin:
                admins.add(digest)
            for db, tables in (spec.policies or {}).items():
                if db not in dialects:
                    known = ", ".join(dialects)
                    raise PolicyError(f"key '{name}': policies name database '{db}', not one of {known}")
                rules = {
                    table.lower(): parse_rule(name, db, dialects[db], table, raw)
                    for table, raw in tables.items()
                }
                policies.setdefault(digest, {})[db] = DataPolicy(name, db, dialects[db], rules)
        return cls(policies, frozenset(admins))
