"""Token streaming with continuous batching: one decode loop shared by every open stream.

`model.generate` runs a fixed batch to the end, so a stream arriving mid-way would wait for the whole
batch. Here a background thread steps the model one token at a time over all open streams; new
streams are prefilled and their KV cache rows merged into the running batch between steps, finished
or cancelled rows are dropped. Rows are left-padded to a common cache width; explicit position ids
and the attention mask keep each row's view equal to generating it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import torch
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from transformers import DynamicCache

from runners.generation import Generator
from runners.schemas import GenRequest

log = logging.getLogger(__name__)

# Stream-loop health: open rows now, and rows freed because their client went away.
active_streams = Gauge("askdb_stream_active", "Token streams being decoded", multiprocess_mode="livesum")
cancelled_streams = Counter("askdb_stream_cancelled", "Streams stopped early because the client left")


class StreamEvent(BaseModel):
    """One streamed piece: a text delta and the token counts so far; the last has finish_reason."""

    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "error" on the last event
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class _Seq:
    req: GenRequest
    prompt: list[int]
    emit: Any  # callable(StreamEvent), thread-safe
    rng: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of decoded text already emitted
    cancelled: bool = False
    hold: int = 0  # characters held back: a stop string may still be forming

    def __post_init__(self) -> None:
        self.hold = max((len(s) for s in self.req.stop), default=1) - 1


class StreamHandle:
    """The consumer side of one stream: iterate events; `cancel()` frees the row at the next step."""

    def __init__(self, seq_holder: list[_Seq]) -> None:
        self._queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._holder = seq_holder

    def put(self, event: StreamEvent) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def cancel(self) -> None:
        for seq in self._holder:
            seq.cancelled = True

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if event.finish_reason is not None:
                return


class StreamEngine:
    """Continuous-batching decode loop over a loaded `Generator` (same weights as the batch path)."""

    def __init__(self, gen: Generator, max_streams: int = 32) -> None:
        self.gen = gen
        self.max_streams = max_streams
        self._pending: list[_Seq] = []
        self._wake = threading.Condition()
        self._rows: list[_Seq] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, width] 1 = real token
        self._last: torch.Tensor | None = None  # [rows] token to feed next
        self._pos: torch.Tensor | None = None  # [rows] position of that token
        self.steps = 0  # decode steps run (tests and metrics read it)
        self._cache_arg: str | None = None
        self._thread = threading.Thread(target=self._loop, name="askdb-stream", daemon=True)
        self._thread.start()

    # ---- consumer side -------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> StreamHandle:
        holder: list[_Seq] = []
        handle = StreamHandle(holder)
        prompt = self.gen.tokenizer(self.gen.render(req), add_special_tokens=False)["input_ids"]
        problem = self.gen._check(len(prompt), req)
        if problem:
            handle.put(StreamEvent(finish_reason="error", error=problem, prompt_tokens=len(prompt)))
            return handle
        rng = None
        if req.seed is not None and req.temperature > 0:
            rng = torch.Generator(device=self.gen.device).manual_seed(req.seed)
        seq = _Seq(req=req, prompt=prompt, emit=handle.put, rng=rng)
        holder.append(seq)
        with self._wake:
            self._pending.append(seq)
            self._wake.notify()
        return handle

    @property
    def active(self) -> int:
        return len(self._rows)

    # ---- decode loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._rows:
                    self._wake.wait()
                room = self.max_streams - len(self._rows)
                new, self._pending = self._pending[:room], self._pending[room:]
            try:
                with torch.inference_mode():
                    if new:
                        self._admit([s for s in new if not s.cancelled])
                    if self._rows:
                        self._step()
            except Exception as exc:  # a model failure must end the streams, not hang them
                log.exception("stream decode step failed")
                for seq in self._rows + new:
                    seq.emit(StreamEvent(finish_reason="error", error=f"generation failed: {exc}"))
                self._rows, self._cache = [], None
                active_streams.set(0)

    def _admit(self, seqs: list[_Seq]) -> None:
        if not seqs:
            return
        tok = self.gen.tokenizer
        batch = tok.pad({"input_ids": [s.prompt for s in seqs]}, padding=True, return_tensors="pt")
        ids, mask = batch["input_ids"].to(self.gen.device), batch["attention_mask"].to(self.gen.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.gen.model.config)
        out = self.gen.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **self._cache_kw(cache)
        )
        first = self._sample(seqs, out.logits[:, -1, :])
        self._merge(seqs, cache, mask, first, mask.sum(-1))
        self._after_tokens(first.tolist(), list(range(len(self._rows) - len(seqs), len(self._rows))))

    def _merge(
        self, seqs: list[_Seq], cache: DynamicCache, mask: torch.Tensor, last: torch.Tensor, pos: torch.Tensor
    ) -> None:
        if self._cache is None or not self._rows:
            self._rows, self._cache, self._mask, self._last, self._pos = list(seqs), cache, mask, last, pos
            active_streams.set(len(self._rows))
            return
        width = max(self._mask.shape[1], mask.shape[1])

        def left_pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([left_pad(old_layer.keys, 2), left_pad(new_layer.keys, 2)])
            old_layer.values = torch.cat([left_pad(old_layer.values, 2), left_pad(new_layer.values, 2)])
        self._mask = torch.cat([left_pad(self._mask, 1), left_pad(mask, 1)])
        self._last = torch.cat([self._last, last])
        self._pos = torch.cat([self._pos, pos])
        self._rows.extend(seqs)
        active_streams.set(len(self._rows))

    def _cache_kw(self, cache: DynamicCache) -> dict[str, DynamicCache]:
        # transformers renamed `past_key_values` to `cache` (5.2x); an unknown name is silently
        # swallowed by **kwargs, leaving the cache empty, so ask the model which one it takes.
        if self._cache_arg is None:
            params = inspect.signature(self.gen.model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
        return {self._cache_arg: cache}

    def _step(self) -> None:
        assert self._cache is not None and self._mask is not None
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        out = self.gen.model(
            input_ids=self._last[:, None],
            attention_mask=self._mask,
            position_ids=self._pos[:, None],
            use_cache=True,
            **self._cache_kw(self._cache),
        )
        self.steps += 1
        self._pos = self._pos + 1
        tokens = self._sample(self._rows, out.logits[:, -1, :])
        self._last = tokens
        self._after_tokens(tokens.tolist(), list(range(len(self._rows))))

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> torch.Tensor:
        """Greedy rows take the argmax; sampled rows use their own temperature, top-p and seed."""
        picks = logits.argmax(-1)
        for row, seq in enumerate(seqs):
            req = seq.req
            if req.temperature == 0.0:
                continue
            scaled = logits[row].float() / req.temperature
            probs = scaled.softmax(-1)
            if req.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                drop = sorted_p.cumsum(-1) - sorted_p > req.top_p  # keep the token that crosses top_p
                probs = probs.scatter(0, order[drop], 0.0)
                probs = probs / probs.sum()
            picks[row] = torch.multinomial(probs, 1, generator=seq.rng)[0]
        return picks

    def _after_tokens(self, tokens: list[int], rows: list[int]) -> None:
        """Record each row's new token, emit text, and drop rows that finished or were cancelled."""
        eos = self.gen.eos_ids
        done: set[int] = set()
        for row, token in zip(rows, tokens, strict=True):
            seq = self._rows[row]
            if seq.cancelled:
                cancelled_streams.inc()
                done.add(row)
                continue
            reason = None
            if token in eos and not seq.req.ignore_eos:
                reason = "stop"
            else:
                seq.generated.append(token)
                if len(seq.generated) >= seq.req.max_new_tokens:
                    reason = "length"
            if self._emit(seq, reason):
                done.add(row)
        if done:
            self._drop(done)

    def _emit(self, seq: _Seq, reason: str | None) -> bool:
        text = self.gen.tokenizer.decode(seq.generated, skip_special_tokens=True)
        cut = [text.index(s) for s in seq.req.stop if s in text[max(0, seq.sent - seq.hold) :]]
        if cut:
            text, reason = text[: min(cut)], "stop"
        if reason is None:
            end = len(text) - seq.hold
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                end = min(end, len(text) - 1)
            if end > seq.sent:
                # counts on every event: a consumer that stops early still knows what was generated
                seq.emit(
                    StreamEvent(
                        text=text[seq.sent : end],
                        prompt_tokens=len(seq.prompt),
                        completion_tokens=len(seq.generated),
                    )
                )
                seq.sent = end
            return False
        seq.emit(
            StreamEvent(
                text=text[seq.sent :],
                finish_reason=reason,
                prompt_tokens=len(seq.prompt),
                completion_tokens=len(seq.generated),
            )
        )
        return True

    def _drop(self, rows: set[int]) -> None:
        keep = [i for i in range(len(self._rows)) if i not in rows]
        self._rows = [self._rows[i] for i in keep]
        active_streams.set(len(keep))
        if not keep:
            self._cache = self._mask = self._last = self._pos = None
            return
        idx = torch.tensor(keep, device=self.gen.device)
        assert self._cache is not None and self._mask is not None
        self._mask = self._mask[idx]
        # columns that are padding in every remaining row are dead weight in each step's attention
        live = int(self._mask.any(0).nonzero()[0])
        self._mask = self._mask[:, live:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[idx, :, live:]
            layer.values = layer.values[idx, :, live:]
        self._last, self._pos = self._last[idx], self._pos[idx]


async def stream_events(engine: StreamEngine, req: GenRequest) -> AsyncIterator[StreamEvent]:
    """Events of one stream; closing the iterator early (client gone) cancels the generation."""
    handle = engine.submit(req)
    try:
        async for event in handle:
            yield event
    finally:
        with contextlib.suppress(Exception):
            handle.cancel()
