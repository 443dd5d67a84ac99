"""Grammar-constrained decoding with llguidance: per-row token masks inside a batched `generate`.

A request may carry `grammar` (a Lark grammar in llguidance's syntax, e.g. pipeline/grammar.py's SQL
grammar). Its row gets the grammar's token mask at every step, before sampling, and its matcher
consumes the token chosen; rows without a grammar are untouched. When the grammar is complete the
mask leaves only EOS, so the row ends. A grammar compiles once per distinct text (LRU cache): each
row then starts from a copy of the compiled matcher.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.hf
import torch
from transformers import LogitsProcessor

MAX_GRAMMAR_CHARS = 200_000  # GenRequest's limit; a SQL grammar for a 100-table schema is ~60 kB
CACHE_SIZE = 32
# error messages must not echo the whole grammar (llguidance appends it by default)
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)


class Constraints:
    """Compiles grammars for one tokenizer; built lazily, once per Generator."""

    def __init__(self, tokenizer: Any, eos_ids: set[int]) -> None:
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=sorted(eos_ids))
        self._compiled: OrderedDict[str, llguidance.LLMatcher | str] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, grammar: str) -> llguidance.LLMatcher | str:
        """A fresh matcher for `grammar`, or the error message when the grammar is invalid."""
        with self._lock:
            entry = self._compiled.get(grammar)
            if entry is None:
                entry = self._build(grammar)
                self._compiled[grammar] = entry
                if len(self._compiled) > CACHE_SIZE:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(grammar)
        return entry if isinstance(entry, str) else entry.deep_copy()

    def _build(self, grammar: str) -> llguidance.LLMatcher | str:
        try:
            spec = llguidance.LLMatcher.grammar_from_lark(grammar)
            matcher = llguidance.LLMatcher(self.tokenizer, spec, log_level=0, limits=_LIMITS)
        except (ValueError, RuntimeError, TypeError) as err:
            return f"grammar is invalid: {err}"
        if matcher.is_error():
            return f"grammar is invalid: {matcher.get_error().splitlines()[0][:300]}"
        return matcher

    def check(self, grammar: str) -> str | None:
        """None when `grammar` compiles, else why not (a per-request error)."""
        entry = self.compile(grammar)
        return entry if isinstance(entry, str) else None

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether `text` is a complete sentence of `grammar` (tests, diagnostics)."""
        matcher = self.compile(grammar)
        if isinstance(matcher, str):
            raise ValueError(matcher)
        tokens = self.tokenizer.tokenize_str(text)
        return matcher.consume_tokens(tokens) and matcher.is_accepting()


class RowGrammar(LogitsProcessor):
    """Masks the logits of constrained rows; must run before any sampling or temperature step."""

    def __init__(self, matchers: list[llguidance.LLMatcher | None], prompt_width: int) -> None:
        self.matchers = matchers
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        started = input_ids.shape[1] > self.prompt_width
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            # a finished row keeps receiving pad tokens; its matcher has stopped and ignores them
            if started and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_error():
                continue  # only after the row ended on a stop string the grammar did not expect
            allowed = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
            n = min(allowed.numel(), scores.shape[1])
            blocked = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
            blocked[:n] = allowed[:n].to(scores.device) == 0
            scores[row] = scores[row].masked_fill(blocked, float("-inf"))
        return scores
