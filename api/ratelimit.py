"""Per-key rate limits: requests per minute as a sliding window, tokens per minute as a bucket.

`requests_per_minute: N` means at most N requests admitted in any 60 seconds: a key may send its N
at once, and then its next request is admitted when the oldest of them is a minute old (the
Retry-After says when). A minute never holds more than N, whether the key was idle before or not;
each key keeps the times of its last N admissions. Tokens are only known after the call (from the
response's `usage`), so they are a token bucket that holds one minute's allowance, refills
continuously and may go into debt by one request's tokens; the key is refused until the debt is
repaid. (A bucket lets a key that was idle use up to twice its tokens in its first minute, its
full bucket and the refill.) State is per worker process, unless ASKDB_REDIS_URL is set: then the
same window and bucket live in Redis, shared by every worker and replica (api/shared_limits.py),
and these serve as its fallback while Redis is down.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Bucket:
    """`capacity` units, refilled at `capacity` per minute. `level` may go negative (debt)."""

    capacity: float
    level: float
    stamp: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 when they are now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing / self.rate


WINDOW_S = 60.0  # requests_per_minute counts admissions in the last minute
TOKEN_CREDIT = 1e-6  # "any positive balance" for the token bucket
SLACK_S = 1e-6  # float rounding: a client that waited exactly Retry-After must get in


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0
    limit: str = ""  # which limit refused: "requests_per_minute" or "tokens_per_minute"


@dataclass
class Window:
    """Times of the admissions in the last WINDOW_S seconds, at most `limit` of them."""

    limit: int
    times: collections.deque[float] = field(default_factory=collections.deque)

    def wait_for(self, now: float) -> float:
        """Seconds until one more request fits (0 when it does now); forgets what left the window."""
        while self.times and self.times[0] <= now - WINDOW_S:
            self.times.popleft()
        return 0.0 if len(self.times) < self.limit else self.times[0] + WINDOW_S - now


@dataclass
class _KeyState:
    requests: Window | None
    tokens: Bucket | None


@dataclass
class RateLimiter:
    """A request window and a token bucket per key name; a limit of None means unlimited."""

    clock: Callable[[], float] = time.monotonic
    _state: dict[str, _KeyState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _get(self, key: str, rpm: int | None, tpm: int | None, now: float) -> _KeyState:
        state = self._state.get(key)
        if state is None:
            state = _KeyState(
                requests=Window(rpm) if rpm else None,
                tokens=Bucket(tpm, tpm, now) if tpm else None,
            )
            self._state[key] = state
        return state

    def admit(self, key: str, rpm: int | None, tpm: int | None) -> Decision:
        """Take one request from `key`'s allowance, or say how long to wait (for every limit at once)."""
        now = self.clock()
        with self._lock:
            state = self._get(key, rpm, tpm, now)
            waits: list[tuple[float, str]] = []
            if state.tokens is not None:
                state.tokens.refill(now)
                # Any positive balance admits the next request; when in debt, wait until it is repaid.
                waits.append((state.tokens.wait_for(TOKEN_CREDIT), "tokens_per_minute"))
            if state.requests is not None:
                waits.append((state.requests.wait_for(now), "requests_per_minute"))
            wait, limit = max(waits, default=(0.0, ""))
            if wait > SLACK_S:
                return Decision(False, ceil_s(wait), limit)
            if state.requests is not None:
                state.requests.times.append(now)
        return Decision(True)

    # the async face api/access.py calls, shared with api/shared_limits.SharedLimiter
    async def aadmit(self, key: str, rpm: int | None, tpm: int | None) -> Decision:
        return self.admit(key, rpm, tpm)

    async def acharge_tokens(self, key: str, tokens: int, tpm: int | None) -> None:
        self.charge_tokens(key, tokens)

    def charge_tokens(self, key: str, tokens: int) -> None:
        """Record `tokens` used by a finished request of `key` (no-op without a token limit)."""
        if tokens <= 0:
            return
        now = self.clock()
        with self._lock:
            state = self._state.get(key)
            if state is None or state.tokens is None:
                return
            state.tokens.refill(now)
            state.tokens.level -= tokens


def ceil_s(seconds: float) -> int:
    # Retry-After is whole seconds; never 0, or clients would retry at once and be refused again.
    return max(1, math.ceil(seconds))


@dataclass
class InFlight:
    """Requests in flight, per key and for the whole process: a slot is taken at once or refused.
    Used from one event loop (one per worker), so a check and its increment are never interleaved."""

    total: int = 0
    _per_key: dict[str, int] = field(default_factory=dict)

    def enter_key(self, key: str, cap: int) -> bool:
        held = self._per_key.get(key, 0)
        if held >= cap:
            return False
        self._per_key[key] = held + 1
        return True

    def leave_key(self, key: str) -> None:
        held = self._per_key.get(key, 0) - 1
        if held > 0:
            self._per_key[key] = held
        else:
            self._per_key.pop(key, None)

    def enter(self, cap: int) -> bool:
        if self.total >= cap:
            return False
        self.total += 1
        return True

    def leave(self) -> None:
        self.total = max(0, self.total - 1)
