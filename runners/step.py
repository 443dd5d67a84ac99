"""The device side of the engine: per-slot state, the decode step and chunked prefill.

Everything a decode step reads lives in static per-slot buffers (next token, position, whether the
slot decodes, sampling parameters, grammar mask), and the step writes its results back into them,
so on a GPU the step is captured once per (slot-count bucket, key-length bucket, sampler variant)
as a CUDA graph and replayed: no Python and no kernel launches per layer. Prefill runs eagerly (its
shapes vary; its cost is the matrix work, not launches).

Slots that take no part in a step (free, or still prefilling) sit at the cache's scratch position
and are not `active`: they compute and write there, harmlessly, and keep their state.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch

from runners.kv import SlotCache
from runners.model import LoadedModel
from runners.sampling import TOP_LOGPROBS, Variant, sample

log = logging.getLogger(__name__)
WIDTH = 2 + 2 * TOP_LOGPROBS  # widest step output (Variant.width with logprobs)


def slot_buckets(slots: int) -> list[int]:
    """Powers of two up to `slots`, and `slots` itself: a step runs over the smallest that fits."""
    sizes, b = [], 1
    while b < slots:
        sizes.append(b)
        b *= 2
    return [*sizes, slots]


def length_buckets(context: int) -> list[int]:
    """Keys a decode step attends: steps of 128 to 1024, then x1.5; at most 50% wasted reads."""
    sizes = list(range(128, 1025, 128))
    while sizes[-1] < context:
        sizes.append(int(sizes[-1] * 1.5) // 128 * 128)
    return [s for s in sizes if s < context] + [context]


def fit(buckets: list[int], n: int) -> int:
    return next(b for b in buckets if b >= n)


@dataclass
class PrefillRow:
    slot: int
    tokens: list[int]  # this chunk of the prompt
    start: int  # position of the chunk's first token
    last: bool  # the chunk ends the prompt: sample the first token
    activate: bool  # join decoding at once (no grammar: its next mask needs no host step)


class Step:
    def __init__(self, lm: LoadedModel, cache: SlotCache, graphs: bool) -> None:
        self.lm, self.cache = lm, cache
        self.model, self.dev, self.dtype = lm.model, lm.device, lm.dtype
        slots = cache.slots
        long = {"dtype": torch.long, "device": self.dev}
        self.ids = torch.zeros(slots, **long)
        self.pos = torch.full((slots,), cache.scratch, **long)
        self.active = torch.zeros(slots, **long)
        self.steps = torch.zeros(slots, **long)
        self.seeds = torch.zeros(slots, **long)
        self.temp = torch.zeros(slots, dtype=torch.float32, device=self.dev)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=self.dev)
        self.words = (lm.vocab_size + 31) // 32
        self.bitmask = torch.full((slots, self.words), -1, dtype=torch.int32, device=self.dev)
        self.out = torch.zeros(
            slots, 2, WIDTH, dtype=torch.float32, device=self.dev
        )  # [:, 0] decode, [:, 1] prefill
        params = inspect.signature(self.model.forward).parameters
        self._kw: dict[str, Any] = {lm.cache_arg: cache, "use_cache": True}
        if "logits_to_keep" in params:
            self._kw["logits_to_keep"] = 1
        self.graphs = graphs and self.dev.type == "cuda"
        self._graphs: dict[tuple[int, int, Variant], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self.slot_sizes = slot_buckets(slots)
        self.key_sizes = length_buckets(cache.context)
        self.captured_s = 0.0

    # ---- host -> device: per-slot parameters and state ------------------------------------------
    def set_slots(self, slots: list[int], **columns: list[float] | list[int]) -> None:
        """Write per-slot values (ids, pos, active, steps, seeds, temp, top_p) for `slots`."""
        index = torch.tensor(slots, dtype=torch.long).to(self.dev, non_blocking=True)
        for name, values in columns.items():
            target: torch.Tensor = getattr(self, name)
            target.index_copy_(
                0, index, torch.tensor(values, dtype=target.dtype).to(self.dev, non_blocking=True)
            )

    def set_masks(self, host: torch.Tensor, rows: int) -> None:
        self.bitmask[:rows].copy_(host[:rows], non_blocking=True)

    # ---- decode ------------------------------------------------------------------------------
    def _logits(self, ids: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        mask = self.cache.masks(positions, kv_len, self.dtype)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, **self._kw)
        return out.logits[:, -1]

    def _decode(self, b: int, kv_len: int, variant: Variant) -> None:
        window = self.cache.window
        window.rows, window.write, window.kv_len = None, self.pos[:b, None], kv_len
        logits = self._logits(self.ids[:b, None], self.pos[:b, None], kv_len)
        packed = sample(
            logits, self.temp[:b], self.top_p[:b], self.seeds[:b], self.steps[:b], variant, self.bitmask[:b]
        )
        self.out[:b, 0, : variant.width] = packed
        active = self.active[:b]
        self.ids[:b] = torch.where(active.bool(), packed[:, 0].long(), self.ids[:b])
        self.pos[:b] += active
        self.steps[:b] += active

    def decode(self, rows: int, max_pos: int, variant: Variant) -> int:
        """One token for every active slot below `rows`; returns the slot bucket it ran over."""
        if not self.graphs:  # eager: exact shapes cost nothing extra
            self._decode(rows, max_pos + 1, variant)
            return rows
        key = (fit(self.slot_sizes, rows), fit(self.key_sizes, max_pos + 1), variant)
        graph = self._graphs.get(key) or self.capture(*key)
        graph.replay()
        return key[0]

    @torch.inference_mode()
    def capture(self, b: int, kv_len: int, variant: Variant) -> torch.cuda.CUDAGraph:
        """Record the step for one bucket. Slots are made inactive meanwhile, so the warm-up run
        changes no row's state (it rewrites each row's next keys with the values the real step
        will write)."""
        started = time.perf_counter()
        saved = self.active.clone()
        self.active.zero_()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._decode(b, kv_len, variant)  # warm-up: lazy allocations happen outside the graph
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._decode(b, kv_len, variant)
        self.active.copy_(saved)
        self._graphs[(b, kv_len, variant)] = graph
        self.captured_s += time.perf_counter() - started
        return graph

    def warm(self, max_keys: int, variants: list[Variant]) -> int:
        """Capture every slot bucket for key lengths up to `max_keys`, largest first (they share
        one memory pool); returns how many graphs exist."""
        if not self.graphs:
            return 0
        keys = [k for k in self.key_sizes if k <= max(max_keys, self.key_sizes[0])]
        for variant in variants:
            for b in reversed(self.slot_sizes):
                for kv_len in reversed(keys):
                    if (b, kv_len, variant) not in self._graphs:
                        self.capture(b, kv_len, variant)
        torch.cuda.synchronize()
        return len(self._graphs)

    # ---- prefill -----------------------------------------------------------------------------
    def prefill(self, rows: list[PrefillRow], variant: Variant) -> None:
        """One chunk for each row, left-padded to a common width so every row's last token is the
        last column (one logits row each). Padding writes to the scratch position and looks at
        position 0 only, so it disturbs nothing and stays finite."""
        n, width = len(rows), max(len(r.tokens) for r in rows)
        ids = torch.zeros(n, width, dtype=torch.long)
        positions = torch.zeros(n, width, dtype=torch.long)
        write = torch.full((n, width), self.cache.scratch, dtype=torch.long)
        for i, r in enumerate(rows):
            pad = width - len(r.tokens)
            ids[i, pad:] = torch.tensor(r.tokens)
            positions[i, pad:] = torch.arange(r.start, r.start + len(r.tokens))
            write[i, pad:] = positions[i, pad:]
        kv_len = max(r.start + len(r.tokens) for r in rows)
        slots = torch.tensor([r.slot for r in rows], dtype=torch.long).to(self.dev, non_blocking=True)
        window = self.cache.window
        window.rows, window.write, window.kv_len = slots, write.to(self.dev, non_blocking=True), kv_len
        logits = self._logits(ids.to(self.dev, non_blocking=True), positions.to(self.dev), kv_len)
        last = [i for i, r in enumerate(rows) if r.last]
        if not last:
            return
        pick = torch.tensor(last, dtype=torch.long).to(self.dev, non_blocking=True)
        sl = slots[pick]
        packed = sample(
            logits[pick],
            self.temp[sl],
            self.top_p[sl],
            self.seeds[sl],
            self.steps[sl],
            variant,
            self.bitmask[sl],
        )
        self.out[sl, 1, : variant.width] = packed
        self.ids[sl] = packed[:, 0].long()
        ends = [rows[i].start + len(rows[i].tokens) for i in last]
        self.pos[sl] = torch.tensor(ends, dtype=torch.long).to(self.dev, non_blocking=True)
        self.steps[sl] += 1
        on = [int(rows[i].activate) for i in last]
        self.active[sl] = torch.tensor(on, dtype=torch.long).to(self.dev, non_blocking=True)

    def fetch(self, rows: int, width: int) -> list[list[list[float]]]:
        """The step's results for slots below `rows`: the one device->host copy of an iteration."""
        return self.out[:rows, :, :width].cpu().tolist()
