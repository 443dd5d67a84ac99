"""The one sampler and the one stop-cut function: every row of every step goes through these.

`sample` is pure tensor code with static shapes (no host sync, no Python branch on data), so the
decode step that calls it can be captured in a CUDA graph. Per row: greedy when temperature is 0,
else a draw from softmax(logits / temperature), restricted to the top-p nucleus when top_p < 1,
after the row's grammar mask. The draw is inverse-CDF sampling with one uniform number per row per
step, hashed from the row's seed and its step count: a seeded request gets the same tokens whatever
its neighbours do (a shared torch RNG would hand out draws in batch order).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from runners.schemas import TokenLogprob

M32 = 0xFFFFFFFF
TOP_LOGPROBS = 20  # OpenAI's upper bound for top_logprobs


@dataclass(frozen=True)
class Variant:
    """What a step computes, known on the host before it runs (one captured graph each)."""

    sample: bool = False  # some row samples (else argmax only)
    top_p: bool = False  # some sampled row has top_p < 1 (needs a sort)
    masked: bool = False  # some row has a grammar mask
    logprobs: bool = False  # some row wants log-probabilities

    @property
    def width(self) -> int:
        """Columns of the step's output: token, its logprob, then top ids and their logprobs."""
        return 2 + 2 * TOP_LOGPROBS if self.logprobs else 1


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # lowbias32 (Chris Wellons' integer hash); int64 arithmetic wraps, the mask keeps the low 32 bits
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & M32
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One number in (0, 1) per row, a pure function of (seed, step)."""
    h = _mix32(_mix32(_mix32(seeds & M32) ^ ((seeds >> 32) & M32)) ^ (steps & M32))
    return (h.double() + 0.5) / 2.0**32


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """-inf where the row's bitmask (llguidance layout: int32 words, bit i of word w = token 32w+i)
    has a 0. Rows without a grammar carry all-ones words."""
    vocab = logits.shape[-1]
    bits = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((bitmask[:, :, None] >> bits) & 1).flatten(1)[:, :vocab]
    return logits.masked_fill(allowed == 0, float("-inf"))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    steps: torch.Tensor,
    variant: Variant,
    bitmask: torch.Tensor | None = None,
) -> torch.Tensor:
    """[rows, variant.width] float32: chosen token ids (exact in float32 below 2^24), then, with
    variant.logprobs, the chosen token's log-probability and the top ids with theirs. Log-probs are
    of the model's distribution (before temperature and masks), as OpenAI reports them."""
    raw = logits.float()
    scores = apply_bitmask(raw, bitmask) if variant.masked and bitmask is not None else raw
    token = scores.argmax(-1)
    if variant.sample:
        probs = (scores / temperature.clamp(min=1e-4)[:, None]).softmax(-1)
        order = None
        if variant.top_p:
            probs, order = probs.sort(-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (the token that crosses it stays)
            probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p[:, None], 0.0)
        cdf = probs.cumsum(-1)
        target = (uniforms(seeds, steps).to(cdf.dtype) * cdf[:, -1])[:, None]
        drawn = torch.searchsorted(cdf, target).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
        if order is not None:
            drawn = order.gather(-1, drawn[:, None]).squeeze(-1)
        token = torch.where(temperature > 0, drawn, token)
    if not variant.logprobs:
        return token[:, None].float()
    logp = raw.log_softmax(-1)
    top_lp, top_ids = logp.topk(TOP_LOGPROBS, -1)
    chosen = logp.gather(-1, token[:, None])
    return torch.cat([token[:, None].float(), chosen, top_ids.float(), top_lp], dim=-1)


def cut_at_stop(text: str, stops: list[str], start: int = 0) -> tuple[str, bool]:
    """`text` up to the earliest stop string found at or after `start`, and whether one was."""
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def normal_seed(seed: int | None) -> int:
    """A request's seed as a signed 64-bit value (any integer is accepted: it wraps), or a fresh one."""
    if seed is None:
        return random.getrandbits(63)
    wrapped = seed % 2**64
    return wrapped - 2**64 if wrapped >= 2**63 else wrapped


def read_logprob(
    row: list[float], width: int, wanted: int, decode: Callable[[list[int]], str]
) -> TokenLogprob | None:
    """One row of a step's output (token, its log-probability, top ids, top log-probabilities) as
    the request's `TokenLogprob` with its `wanted` best alternatives."""
    if width < 3:
        return None
    k = (width - 2) // 2
    pairs = zip(row[2 : 2 + k], row[2 + k : 2 + 2 * k], strict=True)
    top = [(decode([int(i)]), lp) for i, lp in list(pairs)[:wanted]]
    return TokenLogprob(token=decode([int(row[0])]), logprob=row[1], top=top)
