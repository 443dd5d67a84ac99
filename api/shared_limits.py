"""Rate-limit buckets in Redis (or Valkey), so a key's limits hold across workers and replicas.

With `ASKDB_REDIS_URL` set, every worker of every replica takes from the same window and bucket per
key (api/ratelimit.py's semantics: at most `requests_per_minute` admissions in any 60 s, kept as a
sorted set of admission times; tokens a minute's allowance, refilled continuously, that may go
into debt). Each check or charge is one Lua script, atomic in Redis, on Redis's own clock, so
replicas with drifting clocks agree. Without the setting, limits stay per process
(api/ratelimit.py). A key's window holds up to `requests_per_minute` entries in Redis.

Redis unreachable: never a 500. `ASKDB_REDIS_FAILURE=open` (default) falls back to this process's
own buckets (each replica then limits on its own, as without Redis); `closed` refuses with a 503
and Retry-After. Either way one warning when it goes and one line when it is back, and
`askdb_ratelimit_redis_up` / `askdb_ratelimit_redis_errors_total` say so. Redis is tried again
at most every RETRY_S, so it is back within about a second of returning, without a restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

import settings
from api.ratelimit import SLACK_S, TOKEN_CREDIT, Decision, RateLimiter, ceil_s
from observability import metrics

log = logging.getLogger("bentoml.askdb.ratelimit")

RETRY_S = 1.0  # after a failure, go straight to the fallback for this long before trying again
IDLE_TTL_S = 120  # a window or bucket untouched this long is empty / full again: let Redis forget it

# KEYS: requests window (sorted set of admission times), tokens bucket (hash). ARGV: rpm, tpm (0:
# none), tokens to charge (admit: -1), token credit, slack, idle TTL, a unique member for this
# admission. Returns {allowed, wait in µs, 1 = requests / 2 = tokens refused}.
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local function load(key, cap)
  local v = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = tonumber(v[1]) or cap, tonumber(v[2]) or now
  if now > stamp then
    level = math.min(cap, level + (now - stamp) * cap / 60)
    stamp = now
  end
  return level, stamp
end
local function save(key, level, stamp)
  redis.call('HSET', key, 'level', tostring(level), 'stamp', tostring(stamp))
  redis.call('EXPIRE', key, tonumber(ARGV[6]))
end
local rpm, tpm, charge = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if charge >= 0 then
  if tpm > 0 then
    local level, stamp = load(KEYS[2], tpm)
    save(KEYS[2], level - charge, stamp)
  end
  return {1, 0, 0}
end
local wait, which = 0, 0
if tpm > 0 then
  local tl, ts = load(KEYS[2], tpm)
  local missing = tonumber(ARGV[4]) - tl
  if missing > 0 then wait, which = missing / (tpm / 60), 2 end
  save(KEYS[2], tl, ts)
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
    if oldest + 60 - now >= wait then wait, which = oldest + 60 - now, 1 end
  end
end
if wait > tonumber(ARGV[5]) then
  return {0, math.ceil(wait * 1e6), which}
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[7])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return {1, 0, 0}
"""

LIMITS = {1: "requests_per_minute", 2: "tokens_per_minute"}


@dataclass
class SharedLimiter:
    """RateLimiter's interface (async), over Redis; `fallback` is used while Redis is down."""

    url: str
    failure: str = "open"
    timeout_s: float = 0.25
    fallback: RateLimiter = field(default_factory=RateLimiter)
    _down_until: float = 0.0
    _down: bool = False

    def __post_init__(self) -> None:
        if self.failure not in ("open", "closed"):
            raise ValueError(f"ASKDB_REDIS_FAILURE must be 'open' or 'closed', got {self.failure!r}")
        self.client = aioredis.Redis.from_url(
            self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
        )
        self.script = self.client.register_script(SCRIPT)
        metrics.ratelimit_redis_up.set(1)

    async def aadmit(self, key: str, rpm: int | None, tpm: int | None) -> Decision:
        if not (rpm or tpm):
            return Decision(True)
        reply = await self._run(key, rpm, tpm, -1)
        if reply is None:  # Redis down
            return self.fallback.admit(key, rpm, tpm) if self.failure == "open" else UNAVAILABLE
        allowed, wait_us, which = (int(x) for x in reply)
        if allowed:
            return Decision(True)
        return Decision(False, ceil_s(wait_us / 1e6), LIMITS.get(which, ""))

    async def acharge_tokens(self, key: str, tokens: int, tpm: int | None) -> None:
        if tokens <= 0 or not tpm:
            return
        if await self._run(key, None, tpm, tokens) is None and self.failure == "open":
            self.fallback.charge_tokens(key, tokens)

    async def _run(self, key: str, rpm: int | None, tpm: int | None, charge: int) -> list | None:
        if time.monotonic() < self._down_until:
            return None
        keys = [f"askdb:rl:{{{key}}}:window", f"askdb:rl:{{{key}}}:tokens"]  # one hash slot per key
        args = [rpm or 0, tpm or 0, charge, TOKEN_CREDIT, SLACK_S, IDLE_TTL_S, uuid.uuid4().hex]
        try:
            reply = await self.script(keys=keys, args=args)
        except (RedisError, OSError) as err:
            metrics.ratelimit_redis_errors.inc()
            self._down_until = time.monotonic() + RETRY_S
            if not self._down:
                self._down = True
                metrics.ratelimit_redis_up.set(0)
                how = "per-process limits" if self.failure == "open" else "refusing limited keys (503)"
                log.warning("rate-limit Redis unavailable (%s): %s until it is back", type(err).__name__, how)
            return None
        if self._down:
            self._down = False
            metrics.ratelimit_redis_up.set(1)
            log.warning("rate-limit Redis is back: shared limits again")
        return reply


# failure=closed while Redis is down: api/access.py answers 503 for a Decision with this limit
UNAVAILABLE = Decision(False, 1, "unavailable")


def from_settings(s: settings.Settings) -> SharedLimiter | None:
    """Shared limits when ASKDB_REDIS_URL is set (settings.py), else None: per process."""
    return SharedLimiter(s.redis_url, s.redis_failure, s.redis_timeout_s) if s.redis_url else None
