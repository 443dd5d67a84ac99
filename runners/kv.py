"""The fixed-slot KV cache: allocated once (slots × max context), each row at its own position.

A transformers `Cache` whose layers write every row of a forward pass at that row's own positions,
so rows that joined at different times share one decode step with static shapes (what CUDA graphs
need). The engine says before each forward which slots take part and where they write (`Window`):

- decode: slots 0..b-1 (a prefix, so the cache is a view, not a gather), one position per row;
- prefill: any slots (a gather), one chunk of positions per row.

The model stays generic: it calls `cache.update(keys, values, layer_idx)` as with transformers' own
caches, and the attention mask comes from `masks()` as a prepared 4D tensor (or one per layer type
for models with sliding-window layers), which transformers passes through unchanged.

Invariant that makes slot reuse free: a row only attends positions <= its own, and writes a
position before it attends it, so whatever a position held before (another request's keys, a
padding token's) is never read. Memory holds no NaN to begin with: zeros on a GPU, and on a CPU an
anonymous mapping, zero pages that take memory only once written (so a CPU pays for what it uses).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

ATTENTION_TYPES = {"full_attention", "sliding_attention"}


@dataclass
class Window:
    """Which slots the next forward touches, where each row writes, and which keys it reads.

    Lengths travel as tensor shapes, not Python ints, so a compiled forward sees them as dynamic
    sizes instead of constants to recompile for."""

    rows: torch.Tensor | None = None  # None: slots 0..b-1 (decode); else slot ids [n] (prefill)
    write: torch.Tensor = field(default_factory=lambda: torch.zeros(1, 1, dtype=torch.long))  # [n, q]
    span: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.long))  # key positions

    @property
    def kv_len(self) -> int:
        return self.span.shape[0]


class SlotLayer(CacheLayerMixin):
    is_compileable = True
    is_sliding = False

    def __init__(self, window: Window, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.window, self.keys, self.values = window, keys, values
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None  # allocated up front

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.window
        if w.rows is None:
            b = key_states.shape[0]
            keys, values = self.keys[:b], self.values[:b]
            keys.scatter_(2, w.write[:, None, :, None].expand_as(key_states), key_states)
            values.scatter_(2, w.write[:, None, :, None].expand_as(value_states), value_states)
            n = w.span.shape[0]
            return keys[:, :, :n], values[:, :, :n]
        slots = w.rows[:, None]
        self.keys[slots, :, w.write] = key_states.transpose(1, 2)
        self.values[slots, :, w.write] = value_states.transpose(1, 2)
        n = w.span.shape[0]
        return self.keys[w.rows, :, :n], self.values[w.rows, :, :n]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.window.kv_len, 0

    def get_seq_length(self) -> int:
        return self.window.kv_len

    def get_max_length(self) -> int:
        return self.keys.shape[2]


def _storage(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if device.type != "cpu":
        return torch.zeros(numel, dtype=dtype, device=device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    buffer = mmap.mmap(-1, numel * itemsize)  # anonymous: zero-filled, resident only once written
    return torch.frombuffer(buffer, dtype=dtype, count=numel)


@dataclass(frozen=True)
class CacheShape:
    layers: int
    kv_heads: int
    k_dim: int
    v_dim: int
    sliding_window: int | None  # set when some layers attend a sliding window
    layer_types: tuple[str, ...]

    @classmethod
    def of(cls, config: Any) -> CacheShape:
        layers = int(config.num_hidden_layers)
        heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        types = tuple(getattr(config, "layer_types", None) or ["full_attention"] * layers)
        odd = set(types) - ATTENTION_TYPES
        if odd:
            raise ValueError(
                f"{config.model_type}: layers of type {sorted(odd)} need a cache the engine does not have"
            )
        window = getattr(config, "sliding_window", None) if "sliding_attention" in types else None
        return cls(layers, heads, int(head_dim), int(head_dim), window, types)

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return self.layers * self.kv_heads * (self.k_dim + self.v_dim) * itemsize


class SlotCache(Cache):
    """`slots` rows of `context` positions for every layer, in one allocation."""

    def __init__(
        self, shape: CacheShape, slots: int, context: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.positions = torch.arange(context, device=device)  # windows' spans are views of it
        self.window = Window(
            write=torch.zeros(1, 1, dtype=torch.long, device=device), span=self.positions[:1]
        )
        self.shape, self.slots, self.context = shape, slots, context
        per_layer_k = slots * shape.kv_heads * context * shape.k_dim
        per_layer_v = slots * shape.kv_heads * context * shape.v_dim
        flat = _storage(shape.layers * (per_layer_k + per_layer_v), dtype, device)
        layers, offset = [], 0
        for _ in range(shape.layers):
            k = flat[offset : offset + per_layer_k].view(slots, shape.kv_heads, context, shape.k_dim)
            offset += per_layer_k
            v = flat[offset : offset + per_layer_v].view(slots, shape.kv_heads, context, shape.v_dim)
            offset += per_layer_v
            layers.append(SlotLayer(self.window, k, v))
        super().__init__(layers=layers)
        self._flat = flat  # keeps the mapping alive

    @property
    def scratch(self) -> int:
        """A position rows write to when they must write somewhere harmless (see the invariant)."""
        return self.context - 1

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Positions 0..n-1 of slot `src` into slot `dst`, every layer (n choices share a prompt)."""
        for layer in self.layers:
            layer.keys[dst, :, :n] = layer.keys[src, :, :n]
            layer.values[dst, :, :n] = layer.values[src, :, :n]

    def open(self, rows: torch.Tensor | None, write: torch.Tensor, kv_len: int) -> torch.Tensor:
        """Point the next forward at `rows` (None: slots 0..b-1) writing at `write` [n, q], reading
        keys 0..kv_len-1; returns those key positions."""
        w = self.window
        w.rows, w.write, w.span = rows, write, self.positions[:kv_len]
        return w.span

    def masks(self, positions: torch.Tensor, keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | dict:
        """Additive masks [n, 1, q, len(keys)] for queries at `positions` [n, q] over key positions
        `keys`: each query sees the keys at or before its own position (and within the sliding
        window on sliding layers)."""
        query = positions[:, None, :, None]
        visible = keys <= query
        blocked = torch.finfo(dtype).min
        full = torch.zeros(visible.shape, dtype=dtype, device=positions.device).masked_fill(~visible, blocked)
        if self.shape.sliding_window is None:
            return full
        near = visible & (keys > query - self.shape.sliding_window)
        sliding = torch.zeros(near.shape, dtype=dtype, device=positions.device).masked_fill(~near, blocked)
        return {"full_attention": full, "sliding_attention": sliding}
