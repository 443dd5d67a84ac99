"""A stored causal LM, loaded once per runner worker: weights on their device, tokenizer, chat
template, EOS ids and the checks every request passes before it gets a slot."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from runners import chat_format
from runners import device as device_mod
from runners.schemas import GenRequest

SLOT_ATTENTION = "askdb_sdpa"


def slot_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except that a one-token query with grouped KV heads always
    attends the cache's KV heads directly (query heads folded onto them). transformers does that
    only when not compiling; compiled, it would copy every key and value once per query group."""
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] == 1 and groups > 1 and kwargs.get("position_bias") is None:
        b, heads, _, dim = query.shape
        packed = query.reshape(b, heads // groups, groups, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            packed, key, value, attn_mask=attention_mask, scale=scaling
        )
        return out.reshape(b, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


AttentionInterface.register(SLOT_ATTENTION, slot_attention)
# masks as for sdpa, where transformers makes them itself (the engine passes its own)
AttentionMaskInterface.register(SLOT_ATTENTION, sdpa_mask)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: torch.device
    context_length: int  # the model's own; the engine may serve less (runners/config.py)

    @classmethod
    def load(cls, path: str | Path) -> LoadedModel:
        device, dtype = device_mod.pick("llm")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        try:  # sdpa where the architecture has it (masked GQA decode without repeating keys)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, attn_implementation="sdpa"
            )
        except (ValueError, ImportError):
            model = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, attn_implementation="eager"
            )
        return cls.wrap(model.to(device).eval(), tokenizer)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any) -> LoadedModel:
        model.requires_grad_(False)  # serving only: no autograd state anywhere
        if model.config._attn_implementation == "sdpa":
            model.config._attn_implementation = SLOT_ATTENTION
        context = int(getattr(model.config, "max_position_embeddings", 2048))
        return cls(model, tokenizer, next(model.parameters()).device, context)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def vocab_size(self) -> int:
        """Width of the logits (embedding tables are often padded past the tokenizer's vocabulary)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids) if isinstance(ids, list) else {ids}

    @property
    def cache_arg(self) -> str:
        # transformers renamed `past_key_values` to `cache` (5.2x); an unknown name is silently
        # swallowed by **kwargs, leaving the cache unused, so ask the model which one it takes.
        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def render(self, req: GenRequest) -> str:
        if req.messages is not None:
            return chat_format.render(self.tokenizer, req.messages, req.tools)
        return req.prompt or ""

    def encode(self, req: GenRequest) -> list[int]:
        return list(self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"])

    def problem(self, n_prompt: int, req: GenRequest, context: int) -> str | None:
        """Why this request cannot run (a per-request error), or None."""
        if n_prompt == 0:
            return "prompt is empty"
        if n_prompt + req.max_new_tokens > context:
            return (
                f"prompt has {n_prompt} tokens; with max_new_tokens={req.max_new_tokens} that exceeds "
                f"the model's context of {context} tokens"
            )
        return None
