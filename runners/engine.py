"""askdb's LLM engine: continuous batching over a fixed-slot KV cache, one loop for every request.

A background thread runs iterations. Each one: cancelled requests leave, waiting requests take
free slots, one chunk of prefill runs for a group of newcomers of similar length (so a long prompt
stalls running rows by one chunk at most), one decode step runs for every decoding slot (a CUDA
graph replay on a GPU), one device->host copy brings the new tokens, and on the host each row's
token is turned into text, checked against EOS, stop strings and its budget, and sent to its
consumer. Requests join between two steps and leave when they are done; nothing waits behind a
running batch. Grammar rows get their llguidance mask in the same loop.

Consumers: `stream(req)` (events as they come) and `generate(req)` (one result) for asyncio,
`run(reqs)` for blocking callers (tests, evaluation, benchmarks). Leaving a `stream` early, or
`cancel([id])`, frees the row at the next iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections import deque
from typing import Any

import torch

from observability import llm_meter, metrics
from runners.admission import WaitQueue
from runners.constrain import Constraints, fill_mask
from runners.consumers import Consumers, deliver
from runners.fanout import Fanout
from runners.kv import CacheShape, SlotCache
from runners.model import LoadedModel
from runners.prefill import PrefillRow
from runners.sampling import normal_seed, read_logprob
from runners.schemas import GenRequest, StreamEvent
from runners.sequence import Seq, Sink, failed, variant_of
from runners.step import InFlight, Step

log = logging.getLogger(__name__)


class Engine(Consumers):
    def __init__(
        self,
        lm: LoadedModel,
        slots: int = 16,
        context: int | None = None,
        prefill_chunk: int = 256,
        max_waiting: int = 256,
        graphs: bool = True,
        tag: str = "local",
        compile: bool = False,
        overlap: bool | None = None,
    ) -> None:
        self.lm, self.tag = lm, tag
        self.context = min(context or lm.context_length, lm.context_length)
        self.cache = SlotCache(CacheShape.of(lm.model.config), slots, self.context, lm.dtype, lm.device)
        self.step = Step(lm, self.cache, graphs, compile, prefill_chunk)
        self.chunk = prefill_chunk
        # host work for one step while the device runs the next (default on a GPU, where the device
        # runs asynchronously; on a CPU it only costs an extra step for rows that end by EOS)
        self.overlap = lm.device.type == "cuda" if overlap is None else overlap
        self._inflight: InFlight | None = None
        self.rows: list[Seq | None] = [None] * slots
        self._free = list(range(slots))  # a heap: the lowest free slot first keeps steps small
        self._queue = WaitQueue(max_waiting)
        self._inbox: deque[Seq] = deque()
        self._cancels: deque[Seq] = deque()
        # requests not yet finished, by id (ids come from callers: two may share one)
        self._known: dict[str, list[Seq]] = {}
        self._cond = threading.Condition()
        self._prefilling: list[Seq] = []  # in slots, prompt not all in the cache yet (FIFO)
        self._fanout = Fanout(self.cache)  # n choices of one prompt prefill it once
        self._masks = torch.full((slots, self.step.words), -1, dtype=torch.int32)  # host grammar bits
        self._grammars: Constraints | None = None
        self._eos = frozenset(lm.eos_ids)
        self._backend = lm.tokenizer._tokenizer  # tokenizers' Rust tokenizer, for DecodeStream
        self.steps_run = 0  # decode steps so far (tests and benchmarks read it)
        # events made during an iteration, per consumer event loop, handed over together at its end
        self._outbox: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, StreamEvent]]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="askdb-engine", daemon=True)
        self._thread.start()

    def warm_up(self, max_keys: int, cache_dir: str = "") -> dict[str, Any]:
        """Before the first request: compile, if asked, and capture graphs (Step.warm_up)."""
        return self.step.warm_up(max_keys, cache_dir, self.tag, self.lm.device, self.lm.dtype)

    def close(self) -> None:
        """Stop the loop (requests still running end as cancelled) so the memory can go."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    @property
    def slots(self) -> int:
        return self.cache.slots

    @property
    def grammars(self) -> Constraints:
        if self._grammars is None:
            self._grammars = Constraints(self.lm.tokenizer, set(self._eos), self.lm.vocab_size)
        return self._grammars

    # ---- producer side (any thread) -------------------------------------------------------------
    def submit(self, req: GenRequest, sink: Sink, live: bool = True) -> None:
        """Queue `req`; its events go to `sink` (from the engine thread): every piece of text as it
        comes when `live`, else only the final event with the whole text. Bad requests and a full
        queue get their one final event at once, without touching the running rows."""
        prompt = self.lm.encode(req)
        problem = self.lm.problem(len(prompt), req, self.context)
        matcher = None
        if problem is None and req.grammar is not None:
            compiled = self.grammars.compile(req.grammar)
            problem, matcher = (compiled, None) if isinstance(compiled, str) else (None, compiled)
        if problem is not None:
            self._refuse(req, sink, failed(problem, "invalid", len(prompt)))
            return
        seq = Seq(
            req=req,
            prompt=prompt,
            sink=sink,
            seed=normal_seed(req.seed),
            matcher=matcher,
            eos=self._eos,
            live=live,
        )
        with self._cond:
            # waiting = not yet in a slot; free slots will take some of them at the next iteration
            if len(self._queue) + len(self._inbox) >= len(self._free) + self._queue.bound:
                metrics.engine_rejected.labels(reason="queue_full").inc()
                why = f"the LLM queue is full ({self._queue.bound} waiting)"
                self._refuse(req, sink, failed(why, "queue_full", len(prompt)))
                return
            llm_meter.accepted(self.tag)
            self._inbox.append(seq)
            self._known.setdefault(req.id, []).append(seq)
            self._cond.notify()

    def _refuse(self, req: GenRequest, sink: Sink, event: StreamEvent) -> None:
        now = time.time()
        llm_meter.finished(
            self.tag, req, prompt=event.prompt_tokens, completion=0, reason="error",
            received=now, slot=None, first=None, done=now, counted=False,
        )  # fmt: skip
        sink(event)

    def cancel(self, ids: list[str]) -> int:
        """Free these requests' rows at the next iteration; returns how many were still running."""
        with self._cond:
            found = [seq for i in ids for seq in self._known.get(i, ())]
            for seq in found:
                seq.cancelled = True
            self._cancels.extend(found)
            self._cond.notify()
        return len(found)

    # ---- the loop (engine thread) ---------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            with self._cond:
                while not (self._inbox or self._cancels or len(self._queue) or self._busy() or self._closed):
                    self._cond.wait()
                arrived, self._inbox = list(self._inbox), deque()
                cancels, self._cancels = list(self._cancels), deque()
            for seq in arrived:
                self._queue.push(seq)
            try:
                with torch.inference_mode():
                    self._drop_cancelled(cancels)
                    self._iteration()
            except Exception as exc:  # a model failure ends the rows it was serving, not the engine
                log.exception("engine step failed")
                self._inflight = None
                for seq in [s for s in self.rows if s is not None]:
                    seq.end("error", f"generation failed: {type(exc).__name__}", "internal")
                    self._release(seq)
            self._publish()
        for left in self._queue.drain():
            left.end("cancelled")
        for seq in [s for s in self.rows if s is not None]:
            seq.end("cancelled")
        self._publish()

    def _busy(self) -> bool:
        return any(s is not None for s in self.rows)

    def _drop_cancelled(self, seqs: list[Seq]) -> None:
        for seq in seqs:
            if seq.finished:
                continue
            self._queue.remove(seq)
            metrics.engine_cancelled.inc()
            seq.end("cancelled")
            self._release(seq)

    def _release(self, seq: Seq) -> None:
        """The request is over (done, failed or cancelled): count it, free its slot."""
        if seq.released:
            return
        seq.released = True
        self._queue.done(seq)
        llm_meter.finished(
            self.tag, seq.req, prompt=len(seq.prompt), completion=len(seq.generated),
            reason=seq.reason or "error", received=seq.arrived, slot=seq.started,
            first=seq.first_token, done=time.time(),
        )  # fmt: skip
        with self._cond:
            same = self._known.get(seq.req.id, [])
            if seq in same:
                same.remove(seq)
            if not same:
                self._known.pop(seq.req.id, None)
        if seq.slot < 0 or self.rows[seq.slot] is not seq:
            return
        self.rows[seq.slot] = None
        if seq in self._prefilling:
            self._prefilling.remove(seq)
        self._fanout.forget(seq)
        self._masks[seq.slot] = -1
        self.step.set_slots([seq.slot], active=[0], pos=[self.cache.scratch])
        heapq.heappush(self._free, seq.slot)
        seq.slot = -1

    def _admit(self) -> None:
        admitted: list[Seq] = []
        while self._free and len(self._queue):
            seq = self._queue.pop()  # fair share between tenants (runners/admission.py)
            if seq is None:  # the tenants waiting hold all the rows they may
                break
            if seq.cancelled:
                continue
            seq.slot = heapq.heappop(self._free)
            seq.started = time.time()
            self.rows[seq.slot] = seq
            seq.state = "prefill"
            if self._fanout.admit(seq):
                self._prefilling.append(seq)
            admitted.append(seq)
            if seq.matcher is not None:
                fill_mask(seq.matcher, self._masks, seq.slot)
        if admitted:
            self.step.set_slots(
                [s.slot for s in admitted],
                steps=[0] * len(admitted),
                seeds=[s.seed for s in admitted],
                temp=[s.req.temperature for s in admitted],
                top_p=[s.req.top_p for s in admitted],
            )

    def _prefill_group(self) -> list[PrefillRow]:
        """The oldest newcomer's next chunk, with others whose chunks are about as long, within
        one chunk's worth of tokens."""
        if not self._prefilling:
            return []
        rows: list[PrefillRow] = []
        width = 0
        for seq in self._prefilling:
            n = min(seq.remaining_prompt, self.chunk)
            if len(rows) == self.step.prefiller.max_rows:
                break
            if rows and (n > width or n <= width // 2 or (len(rows) + 1) * width > self.chunk):
                continue
            width = width or n
            tokens = seq.prompt[seq.prefilled : seq.prefilled + n]
            last = n == seq.remaining_prompt
            rows.append(PrefillRow(seq.slot, tokens, seq.prefilled, last, last and seq.matcher is None))
        return rows

    def _iteration(self) -> None:
        """Admit, launch this iteration's work, then settle the previous one's tokens on the host
        while the device runs (overlap), or this one's at once (no overlap, or grammar rows: their
        next mask needs their last token)."""
        self._admit()
        self._prefilling.extend(self._fanout.ready())  # n choices: followers whose prompt is copied
        sync = not self.overlap or any(s is not None and s.matcher is not None for s in self.rows)
        if sync:
            self._settle()
        launched = self._launch()
        self._settle()
        self._inflight = launched
        if sync:
            self._settle()

    def _launch(self) -> InFlight | None:
        group = self._prefill_group()
        first = [seq for r in group if r.last and (seq := self.rows[r.slot]) is not None]
        if any(s is not None and s.matcher is not None for s in self.rows):
            self.step.set_masks(self._masks, self._top())
        if group:
            self.step.prefill(group, variant_of(first))
            for r in group:
                seq = self.rows[r.slot]
                assert seq is not None
                seq.prefilled += len(r.tokens)
            for seq in first:
                self._prefilling.remove(seq)
                seq.sampled = 1
                # a grammar row needs its first token on the host (for its next mask) before it
                # decodes; the others join this iteration's step at once
                seq.state = "first" if seq.matcher is not None else "decode"
        decoding = self._decoding()
        top = self._top()
        if decoding:
            # where each row writes: its first token at len(prompt), then one further per token fed
            max_pos = max(len(s.prompt) + s.sampled - 1 for s in decoding)
            self.step.decode(top, max_pos, variant_of(decoding))
            for seq in decoding:
                seq.sampled += 1
            self.steps_run += 1
            metrics.engine_steps.inc()
            metrics.engine_step_rows.observe(len(decoding))
        if not first and not decoding:
            return None
        width = variant_of([*first, *decoding]).width
        pairs = [(s, s.slot, 1) for s in first] + [(s, s.slot, 0) for s in decoding]
        return InFlight(pairs, top, width, self.step.copy_out(top))

    def _decoding(self) -> list[Seq]:
        """Rows this step decodes. A row whose budget is all sampled (its last tokens still on the
        way to the host) is parked, so the device stops advancing it."""
        decoding, parked = [], []
        for seq in self.rows:
            if seq is None or seq.state != "decode":
                continue
            if seq.sampled < seq.req.max_new_tokens:
                decoding.append(seq)
            elif not seq.parked:
                seq.parked = True
                parked.append(seq.slot)
        if parked:
            self.step.set_slots(parked, active=[0] * len(parked), pos=[self.cache.scratch] * len(parked))
        return decoding

    def _settle(self) -> None:
        """Hand the tokens of the launched step to their requests (those still running)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        out = inflight.results.read(inflight.rows, inflight.width)
        for seq, slot, kind in inflight.pairs:  # newcomers first: their first token, then second
            self._take(seq, out[slot][kind], inflight.width)

    def _top(self) -> int:
        """Slots a step must cover: up to the highest one in use."""
        used = [i for i, s in enumerate(self.rows) if s is not None]
        return max(used) + 1 if used else 1

    def _take(self, seq: Seq, row: list[float], width: int) -> None:
        """Hand one sampled token (and its log-probabilities) to its request."""
        if seq.finished or seq.cancelled:
            return
        token = int(row[0])
        try:
            wanted = seq.req.logprobs
            logprob = (
                read_logprob(row, width, wanted, self.lm.tokenizer.decode) if wanted is not None else None
            )
            done = seq.feed(token, self._backend, logprob)
            self._queue.charge(seq, 1)
            if not done and seq.matcher is not None:
                done = not seq.matcher.consume_token(token) or seq.matcher.is_stopped()
                if done:
                    seq.end("stop")
                else:
                    fill_mask(seq.matcher, self._masks, seq.slot)
                    if seq.state == "first":  # its first token is known now: it decodes next step
                        seq.state = "decode"
                        self.step.set_slots([seq.slot], active=[1])
        except Exception as exc:  # this row alone fails (a detokenizer or grammar error)
            log.exception("request %s failed on the host", seq.req.id)
            seq.end("error", f"generation failed: {type(exc).__name__}", "internal")
            done = True
        if done:
            self._release(seq)

    def _publish(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            with contextlib.suppress(RuntimeError):  # that consumer's loop has closed
                loop.call_soon_threadsafe(deliver, items)
        live = [s for s in self.rows if s is not None]
        used = sum(len(s.prompt) + len(s.generated) for s in live)
        waiting = len(self._queue) + len(self._inbox)
        llm_meter.engine_state(self.tag, len(live), waiting, used, self.slots * self.context)
        llm_meter.tenants(self._queue.snapshot())


def from_loaded(lm: LoadedModel, **overrides: Any) -> Engine:
    """An engine over a loaded model, with runners/config.py's settings."""
    from runners import config  # late: config reads the machine (GPUs) on import

    return Engine(lm, **{**config.engine_settings(), **overrides})


def load(path: str, **overrides: Any) -> Engine:
    """An engine over the stored model at `path`, with runners/config.py's settings."""
    return from_loaded(LoadedModel.load(path), **overrides)
