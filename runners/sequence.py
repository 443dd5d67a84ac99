"""One request inside the engine, on the host: its tokens, its text so far, why it stops.

Text is detokenized incrementally (tokenizers' `DecodeStream`: the same text as decoding the whole
list, without decoding it again at every step) and held back while a stop string may still be
forming, so a stream never shows the start of a stop string it later cuts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import DecodeStream

from runners.sampling import Variant, cut_at_stop
from runners.schemas import ErrorCode, FinishReason, GenRequest, GenResult, StreamEvent, TokenLogprob

Sink = Callable[[StreamEvent], None]  # called on the engine thread; must not block


def failed(error: str, code: ErrorCode, prompt_tokens: int = 0) -> StreamEvent:
    return StreamEvent(finish_reason="error", error=error, code=code, prompt_tokens=prompt_tokens)


@dataclass(eq=False)  # a request is itself: compared by identity, hashable
class Seq:
    req: GenRequest
    prompt: list[int]
    sink: Sink
    seed: int  # the request's seed, or one drawn for it (the sampler needs one either way)
    matcher: Any = None  # llguidance.LLMatcher when the request has a grammar
    eos: frozenset[int] = frozenset()
    live: bool = True  # an event per piece of text (streams); else one final event (whole results)
    state: str = "queued"  # queued -> prefill -> (first: waits for the host) -> decode
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the cache
    sampled: int = 0  # tokens sampled on the device (some may not have reached the host yet)
    parked: bool = False  # its budget is sampled: the device no longer advances it
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already emitted
    pending_logprobs: list[TokenLogprob] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    reason: FinishReason | None = None  # why it finished
    released: bool = False  # counted and out of its slot
    # wall-clock stamps (time.time: comparable with the client's GenRequest.submitted_at)
    arrived: float = field(default_factory=time.time)
    started: float | None = None  # when it got a slot
    first_token: float | None = None

    def __post_init__(self) -> None:
        self._detok = DecodeStream(skip_special_tokens=True)
        self._hold = max((len(s) for s in self.req.stop), default=1) - 1

    @property
    def remaining_prompt(self) -> int:
        return len(self.prompt) - self.prefilled

    def feed(self, token: int, backend: Any, logprob: TokenLogprob | None = None) -> bool:
        """Take one generated token; emit what can be shown; True when the request is done."""
        if self.first_token is None:
            self.first_token = time.time()
        reason: FinishReason | None = None
        if token in self.eos and not self.req.ignore_eos:
            reason = "stop"  # EOS ends the row and is not part of its text or its count
        else:
            self.generated.append(token)
            if logprob is not None:
                self.pending_logprobs.append(logprob)
            piece = self._detok.step(backend, token)
            if piece:
                before = max(0, len(self.text) - self._hold)
                self.text += piece
                self.text, hit = cut_at_stop(self.text, self.req.stop, before)
                if hit:
                    reason = "stop"
            if reason is None and len(self.generated) >= self.req.max_new_tokens:
                reason = "length"
        self._emit(reason)
        return reason is not None

    def _emit(self, reason: FinishReason | None) -> None:
        end = len(self.text) if reason is not None else len(self.text) - self._hold
        if reason is None and (not self.live or (end <= self.sent and not self.pending_logprobs)):
            return
        event = StreamEvent.model_construct(  # built on the hot path: fields are known-good
            text=self.text[self.sent : max(end, self.sent)],
            finish_reason=reason,
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.generated),
            logprobs=self.pending_logprobs or None,
        )
        self.sent = max(end, self.sent)
        self.pending_logprobs = []
        if reason is not None:
            self.finished, self.reason = True, reason
        self.sink(event)

    def end(self, reason: FinishReason, error: str | None = None, code: ErrorCode | None = None) -> None:
        """Close the request from outside the token flow (cancelled, or the step failed)."""
        if self.finished:
            return
        self.finished, self.reason = True, reason
        self.sink(
            StreamEvent(
                # what was held back (or, for a whole-result consumer, everything) goes with a normal end
                text=self.text[self.sent :] if reason in ("stop", "length") else "",
                finish_reason=reason,
                prompt_tokens=len(self.prompt),
                completion_tokens=len(self.generated),
                error=error,
                code=code,
            )
        )


def variant_of(seqs: list[Seq]) -> Variant:
    """What a step must compute for these requests (one captured graph per variant)."""
    reqs = [s.req for s in seqs]
    sampled = [r for r in reqs if r.temperature > 0]
    return Variant(
        sample=bool(sampled),
        top_p=any(r.top_p < 1.0 for r in sampled),
        masked=any(s.matcher is not None for s in seqs),
        logprobs=any(r.logprobs is not None for r in reqs),
    )


def collect(events: list[StreamEvent]) -> GenResult:
    """A finished request's events as one result."""
    last = events[-1]
    logprobs = [lp for e in events for lp in (e.logprobs or [])]
    return GenResult(
        text="".join(e.text for e in events),
        finish_reason=last.finish_reason or "error",
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        error=last.error,
        code=last.code,
        logprobs=logprobs or None,
    )
