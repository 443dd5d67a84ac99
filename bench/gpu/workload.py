"""The fixed workload: a prompt of exactly N tokens, N new tokens, EOS ignored."""

from __future__ import annotations

from typing import Any

from runners.schemas import GenRequest


def prompt_of(tokenizer: Any, n_tokens: int) -> str:
    """A prompt that tokenizes to exactly n_tokens (a repeated single-token word)."""
    for word in (" hello", " the", " a", " data"):
        text = word * n_tokens
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) == n_tokens:
            return text
    raise RuntimeError(f"no single-token word found to build a {n_tokens}-token prompt")


def request(prompt: str, new_tokens: int) -> GenRequest:
    return GenRequest(prompt=prompt, max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
