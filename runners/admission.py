"""Who gets the next free slot: a bounded FIFO of requests waiting for one.

Past its bound a request is refused at once (the service answers 503 with Retry-After) rather
than queued behind work it cannot catch up with; the bound and the depth are metrics.
"""

from __future__ import annotations

from collections import deque

from runners.sequence import Seq


class WaitQueue:
    def __init__(self, bound: int) -> None:
        self.bound = bound
        self._items: deque[Seq] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.bound

    def push(self, seq: Seq) -> None:
        self._items.append(seq)

    def pop(self) -> Seq | None:
        return self._items.popleft() if self._items else None

    def remove(self, seq: Seq) -> bool:
        try:
            self._items.remove(seq)
        except ValueError:
            return False
        return True
