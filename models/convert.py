"""Load a source with transformers and write safetensors + tokenizer + config into a folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelImportError
from models.source import Source

TASKS = ("text-generation", "feature-extraction")
# sentence-transformers files that say how to pool and normalise; copied verbatim when present
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    task: str
    architecture: str


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]


def infer_task(config: Any) -> str:
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "text-generation"
    return "feature-extraction"


def _plain_copy(model: Any) -> Any:
    """A GGUF-loaded model refuses save_pretrained; rebuild it from config and copy the weights in."""
    import transformers

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = transformers.AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise ModelImportError(f"GGUF weights do not match the architecture (missing={missing[:3]})")
    fresh.tie_weights()
    return fresh


def load(source: Source, task: str | None) -> Loaded:
    import transformers

    kwargs: dict[str, Any] = {}
    where = source.path
    if source.kind == "gguf":
        kwargs["gguf_file"] = source.path.name
        where = source.path.parent
    try:
        config = transformers.AutoConfig.from_pretrained(where, **kwargs)
    except Exception as exc:  # transformers raises ValueError/KeyError/OSError/struct errors
        raise ModelImportError(
            f"{source.name}: unsupported or unreadable model config ({_one_line(exc)})"
        ) from None
    # GGUF files often carry no `architectures`; they hold causal LMs in practice
    task = task or ("text-generation" if source.kind == "gguf" else infer_task(config))
    if task not in TASKS:
        raise ModelImportError(f"task {task!r} is not one of {', '.join(TASKS)}")
    auto = transformers.AutoModelForCausalLM if task == "text-generation" else transformers.AutoModel
    try:
        model = auto.from_pretrained(where, dtype="auto", **kwargs)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, **kwargs)
    except ModelImportError:
        raise
    except Exception as exc:
        raise ModelImportError(
            f"{source.name}: cannot be loaded as a {task} model ({_one_line(exc)})"
        ) from None
    if source.kind == "gguf":
        model = _plain_copy(model)
    arch = (getattr(config, "architectures", None) or [model.__class__.__name__])[0]
    return Loaded(model, tokenizer, task, arch)


def save(loaded: Loaded, source: Source, target: Path) -> None:
    loaded.model.save_pretrained(target, safe_serialization=True)
    loaded.tokenizer.save_pretrained(target)
    if source.kind != "gguf":
        for name in SENTENCE_FILES:
            if (source.path / name).is_file():
                shutil.copy2(source.path / name, target / name)
        for pooling in source.path.glob("*_Pooling"):
            shutil.copytree(pooling, target / pooling.name, dirs_exist_ok=True)


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
