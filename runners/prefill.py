"""Prefill: one chunk of prompt for a group of rows in one forward, captured as CUDA graphs.

An eager forward pays Python dispatch for every one of the model's ~600 small operations (tens of
milliseconds for a 16-layer model, whatever the chunk's size), and prefill runs between decode
steps, so on a GPU it is replayed from a graph too: shapes are bucketed (rows and tokens to powers
of two, keys to the decode step's length buckets), each bucket is captured on first use with the
request's own inputs (the warm-up run is real work: it writes the chunk's keys, which the replay
rewrites identically) and kept in a small LRU. A capture that fails turns graphs off for prefill,
and the engine goes on eagerly.

Rows are left-padded, so every row's last token is the last column (one logits row each).
Padding, and whole padding rows, write to the cache's scratch position and look at position 0
only: they disturb nothing and stay finite.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from runners.kv import SlotCache

log = logging.getLogger("bentoml.askdb.llm")
MIN_TOKENS = 16  # a chunk is padded to at least this many tokens (fewer buckets)
MAX_GRAPHS = 48


@dataclass
class PrefillRow:
    slot: int
    tokens: list[int]  # this chunk of the prompt
    start: int  # position of the chunk's first token
    last: bool  # the chunk ends the prompt: sample the first token
    activate: bool  # join decoding at once (no grammar: its next mask needs no host step)
    dummy: bool = False  # padding only


def _pow2(n: int, cap: int) -> int:
    return min(1 << max(0, n - 1).bit_length(), cap)


Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Prefill:
    def __init__(
        self,
        cache: SlotCache,
        forward: Callable[[], Forward],
        key_sizes: list[int],
        chunk: int,
        graphs: bool,
        min_size: int,
        pool: object,
    ) -> None:
        self.cache, self.forward, self.key_sizes = cache, forward, key_sizes
        self.min_size, self.pool = min_size, pool
        self.max_tokens = max(chunk, MIN_TOKENS)
        self.max_rows = max(min_size, min(cache.slots, self.max_tokens // MIN_TOKENS))
        self.graphs = graphs
        dev = cache.positions.device
        if graphs:  # the inputs every captured prefill reads
            shape = (self.max_rows, self.max_tokens)
            self.ids = torch.zeros(shape, dtype=torch.long, device=dev)
            self.pos = torch.zeros(shape, dtype=torch.long, device=dev)
            self.write = torch.zeros(shape, dtype=torch.long, device=dev)
            self.slots = torch.zeros(self.max_rows, dtype=torch.long, device=dev)
        self._graphs: OrderedDict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = (
            OrderedDict()
        )

    def shape(self, rows: list[PrefillRow]) -> tuple[int, int, int]:
        """(rows, tokens, keys) this group runs with: exact when eager, bucketed for graphs."""
        n = max(len(rows), self.min_size)
        width = max(self.min_size, *(len(r.tokens) for r in rows))
        keys = max(self.min_size, *(r.start + len(r.tokens) for r in rows))
        if not self.graphs:
            return n, width, keys
        fit = next(k for k in self.key_sizes if k >= keys)
        return _pow2(n, self.max_rows), _pow2(max(width, MIN_TOKENS), self.max_tokens), fit

    def run(self, rows: list[PrefillRow]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of each row's last token [len(rows), vocab], and the slot of each row."""
        n, width, keys = self.shape(rows)
        padded = rows + [PrefillRow(rows[0].slot, [0], 0, False, False, dummy=True)] * (n - len(rows))
        ids = torch.zeros(n, width, dtype=torch.long)
        positions = torch.zeros(n, width, dtype=torch.long)
        write = torch.full((n, width), self.cache.scratch, dtype=torch.long)
        for i, r in enumerate(padded):
            pad = width - len(r.tokens)
            ids[i, pad:] = torch.tensor(r.tokens)
            positions[i, pad:] = torch.arange(r.start, r.start + len(r.tokens))
            if not r.dummy:  # a dummy row only pads the batch: it writes nowhere that counts
                write[i, pad:] = positions[i, pad:]
        slots = torch.tensor([r.slot for r in padded], dtype=torch.long)
        dev = self.cache.positions.device
        if self.graphs:
            self.ids[:n, :width].copy_(ids, non_blocking=True)
            self.pos[:n, :width].copy_(positions, non_blocking=True)
            self.write[:n, :width].copy_(write, non_blocking=True)
            self.slots[:n].copy_(slots, non_blocking=True)
            logits = self._replay(n, width, keys)
            if logits is not None:
                return logits[: len(rows)], self.slots[: len(rows)]
        slots_d = slots.to(dev, non_blocking=True)
        span = self.cache.open(slots_d, write.to(dev, non_blocking=True), keys)
        logits = self.forward()(ids.to(dev, non_blocking=True), positions.to(dev), span)
        return logits[: len(rows)], slots_d[: len(rows)]

    def _body(self, n: int, width: int, keys: int) -> torch.Tensor:
        span = self.cache.open(self.slots[:n], self.write[:n, :width], keys)
        return self.forward()(self.ids[:n, :width], self.pos[:n, :width], span)

    def _replay(self, n: int, width: int, keys: int) -> torch.Tensor | None:
        key = (n, width, keys)
        entry = self._graphs.get(key)
        if entry is None:
            try:
                entry = self._capture(n, width, keys)
            except Exception:  # run eagerly from now on rather than fail requests
                log.exception("prefill graph capture failed; prefill runs eagerly from now on")
                self.graphs = False
                return None
            self._graphs[key] = entry
            if len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, logits = entry
        graph.replay()
        return logits

    def _capture(self, n: int, width: int, keys: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body(n, width, keys)  # warm-up: this request's real chunk, written for real
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            logits = self._body(n, width, keys)
        return graph, logits
