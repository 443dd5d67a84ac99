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

from runners import compiled
from runners.kv import SlotCache
from runners.model import LoadedModel
from runners.prefill import Prefill, PrefillRow
from runners.sampling import TOP_LOGPROBS, Variant, sample

log = logging.getLogger(__name__)
WIDTH = 2 + 2 * TOP_LOGPROBS  # widest step output (Variant.width with logprobs)


@dataclass
class Results:
    """One iteration's sampled tokens on their way to the host: a copy into pinned memory that
    runs after the step on the device's stream, so the host can work meanwhile."""

    host: torch.Tensor
    event: torch.cuda.Event | None

    def read(self, rows: int, width: int) -> list[list[list[float]]]:
        if self.event is not None:
            self.event.synchronize()
        return self.host[:rows, :, :width].tolist()


@dataclass
class InFlight:
    """A launched iteration: which request takes the token of which slot (1: first token from
    prefill, 0: from the decode step), and its results on their way to the host."""

    pairs: list[tuple[Any, int, int]]  # (Seq, slot, 0 or 1)
    rows: int
    width: int
    results: Results


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


class Step:
    def __init__(
        self, lm: LoadedModel, cache: SlotCache, graphs: bool, compile: bool = False, chunk: int = 256
    ) -> None:
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
        # two host buffers: one is read while the next iteration's copy lands in the other
        pinned = self.dev.type == "cuda"
        self._host = [torch.zeros(slots, 2, WIDTH, pin_memory=pinned) for _ in range(2)]
        self._flip = 0
        params = inspect.signature(self.model.forward).parameters
        self._kw: dict[str, Any] = {lm.cache_arg: cache, "use_cache": True}
        if "logits_to_keep" in params:
            self._kw["logits_to_keep"] = 1
        self.graphs = graphs and self.dev.type == "cuda"
        # torch.compile fuses the model's many small kernels (a decode step of an eager 16-layer
        # Llama is ~600 launches); one dynamic-shape compile serves every bucket, then the decode
        # step is captured as CUDA graphs over the compiled kernels
        self.compiled = compile
        self.forward = torch.compile(self._forward, dynamic=True) if compile else self._forward
        # compiled code specialises sizes 0 and 1: pad every size to 2 or more, so one compiled
        # graph serves decode and one prefill, whatever the number of rows or tokens
        self.min_size = 2 if compile else 1
        self._graphs: dict[tuple[int, int, Variant], torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.graphs else None
        self.slot_sizes = [b for b in slot_buckets(slots) if b >= self.min_size] or [slots]
        self.key_sizes = length_buckets(cache.context)
        self.captured_s = 0.0
        self.prefiller = Prefill(
            cache, lambda: self.forward, self.key_sizes, chunk, self.graphs, self.min_size, self._pool
        )

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
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Last-position logits of the model over the open window (compiled when asked)."""
        mask = self.cache.masks(positions, keys, self.dtype)
        out = self.model(input_ids=ids, position_ids=positions, attention_mask=mask, **self._kw)
        return out.logits[:, -1]

    def _decode(self, b: int, kv_len: int, variant: Variant) -> None:
        keys = self.cache.open(None, self.pos[:b, None], kv_len)
        logits = self.forward(self.ids[:b, None], self.pos[:b, None], keys)
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
            rows = min(max(rows, self.min_size), self.cache.slots)
            self._decode(rows, max(max_pos + 1, self.min_size), variant)
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

    @torch.inference_mode()
    def warm_up(self, max_keys: int, cache_dir: str, *key: object) -> dict[str, Any]:
        """Before the first request: compile, if asked (loading kernels compiled before from
        `cache_dir`), and capture the decode graphs for key lengths up to `max_keys`; `key` names
        the model and device in the cache file."""
        t0 = time.perf_counter()
        compiling = self.compiled
        cache = compiled.cache_file(
            cache_dir if compiling else "", *key, self.cache.slots, self.cache.context
        )
        loaded = compiled.load(cache)
        state = ("from cache" if loaded else "yes") if compiling else "no"
        if compiling:
            try:
                self.warm_prefill()
                self.warm(self.key_sizes[0], [Variant()])  # compiles the decode forward
            except Exception as err:  # serve uncompiled rather than not at all
                log.exception("torch.compile failed; the engine runs the model uncompiled")
                self.uncompile()
                compiling, state = False, f"failed ({type(err).__name__})"
        t1 = time.perf_counter()
        graphs = self.warm(max_keys, [Variant(), Variant(sample=True)])
        if compiling and not loaded:
            compiled.save(cache)
        return {
            "compiled": state,
            "graphs": graphs,
            "prefill_s": t1 - t0,
            "decode_s": time.perf_counter() - t1,
        }

    def uncompile(self) -> None:
        """Back to the eager forward (after a failed compile); graphs already captured go."""
        self.forward, self.compiled = self._forward, False
        self._graphs.clear()

    def warm_prefill(self) -> None:
        """Compile the prefill forward now (two padding rows: they write only to scratch)."""
        pad = PrefillRow(0, [0] * 16, 0, last=False, activate=False, dummy=True)
        self.prefill([pad, pad], Variant())
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    # ---- prefill -----------------------------------------------------------------------------
    def prefill(self, rows: list[PrefillRow], variant: Variant) -> None:
        """One chunk for each row (runners/prefill.py); rows whose prompt it ends get their first
        token sampled here, and those that decode at once are activated."""
        logits, slots = self.prefiller.run(rows)
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

    def copy_out(self, rows: int) -> Results:
        """Start the one device->host copy of an iteration: the results of slots below `rows`."""
        host = self._host[self._flip]
        self._flip ^= 1
        host[:rows].copy_(self.out[:rows], non_blocking=True)
        event = None
        if self.dev.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        return Results(host, event)
