"""Import Hugging Face models into the BentoML model store (see models/README.md)."""

from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG
from models.errors import ModelImportError

__all__ = ["DEFAULT_EMBED_TAG", "DEFAULT_LLM_TAG", "ModelImportError"]
