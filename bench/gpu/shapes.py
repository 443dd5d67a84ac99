"""Model shapes built from config with random weights, imported into the store the production way.

Throughput does not depend on weight values, so a random model of the right shape measures what a
trained one would, as long as every request generates the same number of tokens (EOS ignored).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# A Llama-3.2-1B-class shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, vocab 128256).
LLAMA_1B: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
# Small enough to run the whole benchmark on a CPU in seconds: for checking the scripts, not speed.
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
SHAPES = ("smollm2-135m", "llama-1b")


@dataclass
class Shape:
    name: str
    config: Any  # transformers PretrainedConfig

    @property
    def layers(self) -> int:
        return int(self.config.num_hidden_layers)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V for one token across all layers: what attention reads per cached token per step."""
        c = self.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * dtype_bytes


def base_config(base: Path) -> dict[str, Any]:
    """SmolLM2-135M's config.json, read from the stored default model (or a copy of its folder)."""
    return json.loads((base / "config.json").read_text())


def make_config(name: str, base: Path, tiny: bool) -> Any:
    import transformers

    raw = base_config(base)
    if name == "llama-1b":
        keep = {k: raw[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in raw}
        raw = {**LLAMA_1B, **keep}
    elif name != "smollm2-135m":
        raise ValueError(f"unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    if tiny:
        raw = {**raw, **TINY}
    raw["dtype"] = "bfloat16"
    raw.pop("quantization_config", None)
    return transformers.LlamaConfig.from_dict(raw)


def build(name: str, base: Path, *, tiny: bool, device: str, seed: int = 0) -> tuple[Shape, Path]:
    """Write a random-weight model of this shape, with the base model's tokenizer, into a temp folder."""
    import transformers

    config = make_config(name, base, tiny)
    torch.manual_seed(seed)  # same weights every run, so the store import is reused locally
    with torch.device(device):  # initialising 1B parameters on the CPU alone takes a minute
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = Path(tempfile.mkdtemp(prefix=f"askdb-bench-{name}-"))
    model.save_pretrained(folder, safe_serialization=True)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    del model
    return Shape(name, config), folder


def import_shape(name: str, folder: Path, tiny: bool) -> str:
    """Through models.importer, exactly as `python -m models import DIR` does; returns the store tag."""
    from models.importer import import_model

    stored, _ = import_model(
        str(folder), f"bench-{name}{'-tiny' if tiny else ''}", task="text-generation", progress=False
    )
    return str(stored.tag)


def import_encoder(config_dir: Path, *, device: str, seed: int = 0) -> str:
    """The default encoder's shape with random weights, imported under the default embedding name,
    for machines that carry only its config (the AskDB service needs an embedding runner to start)."""
    import shutil

    import transformers

    from models.defaults import DEFAULT_EMBED_TAG
    from models.importer import import_model

    torch.manual_seed(seed)
    config = transformers.AutoConfig.from_pretrained(config_dir)
    with torch.device(device):
        model = transformers.AutoModel.from_config(config)
    folder = Path(tempfile.mkdtemp(prefix="askdb-bench-encoder-"))
    shutil.copytree(config_dir, folder, dirs_exist_ok=True)  # tokenizer, pooling and module files
    model.save_pretrained(folder, safe_serialization=True)
    stored, _ = import_model(
        str(folder), DEFAULT_EMBED_TAG.split(":")[0], task="feature-extraction", progress=False
    )
    return str(stored.tag)
