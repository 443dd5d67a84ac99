"""Sentence embeddings the way the model card says: pooling from 1_Pooling, normalise if listed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from runners import device as device_mod


def _pooling_mode(path: Path) -> str:
    for cfg in sorted(path.glob("*_Pooling/config.json")):
        conf = json.loads(cfg.read_text())
        for mode in ("cls_token", "max_tokens", "mean_sqrt_len_tokens", "mean_tokens"):
            if conf.get(f"pooling_mode_{mode}"):
                return mode
    return "mean_tokens"  # the sentence-transformers default


def _normalises(path: Path) -> bool:
    modules = path / "modules.json"
    if not modules.is_file():
        return True  # cosine similarity is what callers use the vectors for
    return any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


def _max_length(path: Path, tokenizer: Any) -> int:
    st = path / "sentence_bert_config.json"
    if st.is_file():
        return int(json.loads(st.read_text()).get("max_seq_length", 512))
    return min(int(tokenizer.model_max_length), 512)


@dataclass
class Embedder:
    model: Any
    tokenizer: Any
    device: torch.device
    pooling: str
    normalize: bool
    max_length: int

    @classmethod
    def load(cls, path: str | Path) -> Embedder:
        path = Path(path)
        device, dtype = device_mod.pick("embed")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModel.from_pretrained(path, dtype=dtype).to(device).eval()
        return cls(
            model, tokenizer, device, _pooling_mode(path), _normalises(path), _max_length(path, tokenizer)
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        if self.pooling == "cls_token":
            pooled = hidden[:, 0]
        elif self.pooling == "max_tokens":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(1).values
        else:
            summed, counts = (hidden * mask).sum(1), mask.sum(1).clamp(min=1e-9)
            pooled = summed / (counts.sqrt() if self.pooling == "mean_sqrt_len_tokens" else counts)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().tolist()
