"""Grammar-constrained decoding with llguidance: per-row token masks in the engine's decode loop.

A request may carry `grammar` (a Lark grammar in llguidance's syntax, e.g. pipeline/grammar.py's SQL
grammar). Its row gets the grammar's token bitmask before every sample (runners/sampling.py applies
it on the device) and its matcher consumes the token chosen; rows without a grammar are untouched.
When the grammar is complete the mask leaves only EOS, so the row ends. A grammar compiles once per
distinct text (LRU cache): each row then starts from a copy of the compiled matcher.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import torch

CACHE_SIZE = 32
# error messages must not echo the whole grammar (llguidance appends it by default)
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)


class Constraints:
    """Compiles grammars for one tokenizer; built lazily, once per Generator."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], vocab_size: int | None = None) -> None:
        # n_vocab: the logits' width, so masks line up with them even where the table is padded
        self.tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_ids)
        )
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


def fill_mask(matcher: llguidance.LLMatcher, bitmask: torch.Tensor, row: int) -> None:
    """The tokens `matcher` allows next, as bits in row `row` of a CPU int32 bitmask."""
    llguidance.torch.fill_next_token_bitmask(matcher, bitmask, row)
