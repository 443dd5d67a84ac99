"""Who gets the next free slot: a bounded queue of waiting requests, shared fairly between tenants.

Each tenant (an API key, runners/tenancy.py) has its own FIFO. When a slot frees, it goes to the
waiting tenant that has been served the fewest weighted tokens: a virtual token counter per tenant
(VTC, Sheng et al., "Fairness in Serving Large Language Models", OSDI 2024) grows by tokens / weight
as its rows take prompt tokens and produce new ones. A tenant that was idle re-enters at the
smallest counter of those active, so idleness banks no credit; a heavy tenant's 32 streams then
cannot keep a light tenant's one request waiting behind them, and weights 3:1 get 3:1 of the
tokens while both are backlogged. `max_rows` caps the slots one tenant holds at once.

Past its bound a request is refused at once (the service answers 503 with Retry-After) rather
than queued behind work it cannot catch up with; the bound and the depth are metrics. With a single
tenant this is the FIFO it replaced.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from runners.sequence import Seq


@dataclass
class _Tenant:
    served: float = 0.0  # weighted tokens served: the virtual token counter
    weight: float = 1.0
    max_rows: int | None = None
    waiting: deque[Seq] = field(default_factory=deque)
    rows: int = 0  # slots held now

    @property
    def active(self) -> bool:
        return bool(self.waiting) or self.rows > 0

    @property
    def eligible(self) -> bool:
        return bool(self.waiting) and (self.max_rows is None or self.rows < self.max_rows)


class WaitQueue:
    """Used from the engine thread only (engine.py hands it arrivals at each iteration)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._tenants: dict[str, _Tenant] = {}
        self._holding: set[Seq] = set()  # popped and not yet `done`
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def full(self) -> bool:
        return self._size >= self.bound

    def push(self, seq: Seq) -> None:
        spec = seq.req.tenant
        tenant = self._tenants.get(spec.name)
        if tenant is None:
            tenant = self._tenants[spec.name] = _Tenant()
        tenant.weight, tenant.max_rows = spec.weight, spec.max_rows  # the latest request's spec
        if not tenant.active:  # back from idle: no credit for the time it asked for nothing
            floor = [t.served for t in self._tenants.values() if t.active]
            tenant.served = max(tenant.served, min(floor, default=tenant.served))
        tenant.waiting.append(seq)
        self._size += 1

    def pop(self) -> Seq | None:
        """The next request of the eligible tenant served least, or None (nobody eligible)."""
        ready = [(t.served, name) for name, t in self._tenants.items() if t.eligible]
        if not ready:
            return None
        tenant = self._tenants[min(ready)[1]]
        seq = tenant.waiting.popleft()
        self._size -= 1
        tenant.rows += 1
        self._holding.add(seq)
        self.charge(seq, len(seq.prompt))  # the prompt is work done for it at once (prefill)
        return seq

    def charge(self, seq: Seq, tokens: int) -> None:
        """`tokens` more were processed for `seq` (one per generated token)."""
        tenant = self._tenants.get(seq.req.tenant.name)
        if tenant is not None:
            tenant.served += tokens / tenant.weight

    def done(self, seq: Seq) -> None:
        """`seq` left its slot (finished, failed or cancelled); no-op for one never popped."""
        if seq in self._holding:
            self._holding.discard(seq)
            self._tenants[seq.req.tenant.name].rows -= 1

    def remove(self, seq: Seq) -> bool:
        tenant = self._tenants.get(seq.req.tenant.name)
        try:
            if tenant is None:
                return False
            tenant.waiting.remove(seq)
        except ValueError:
            return False
        self._size -= 1
        return True

    def drain(self) -> list[Seq]:
        """Every waiting request, taken out (the engine is closing)."""
        left = [seq for t in self._tenants.values() for seq in t.waiting]
        for tenant in self._tenants.values():
            tenant.waiting.clear()
        self._size = 0
        return left

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Tenant name -> (rows held, requests waiting), for the per-tenant gauges."""
        return {name: (t.rows, len(t.waiting)) for name, t in self._tenants.items()}
