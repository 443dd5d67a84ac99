"""Put a model into the BentoML store: one transaction, so a failure leaves nothing behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound
from tqdm import tqdm

from models import convert
from models.defaults import DEFAULTS
from models.errors import ModelImportError
from models.source import resolve

STEPS = ("resolve source", "load + convert", "save safetensors + tokenizer", "record metadata")


def find(name: str, revision: str | None = None) -> bentoml.Model | None:
    """The newest stored model called `name` that came from `revision` (any, when revision is None)."""
    try:
        candidates = bentoml.models.list(name)
    except NotFound:
        return None
    for model in sorted(candidates, key=lambda m: m.info.creation_time, reverse=True):
        if revision is None or model.info.metadata.get("revision") == revision:
            return model
    return None


def import_model(
    source_name: str,
    name: str,
    *,
    task: str | None = None,
    revision: str | None = None,
    labels: dict[str, str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[bentoml.Model, bool]:
    """Import and return (stored model, created). An identical earlier import is reused."""
    bar = tqdm(STEPS, desc=f"import {name}", disable=not progress, unit="step", leave=progress)
    steps = iter(bar)
    bar.set_postfix_str(next(steps))
    source = resolve(source_name, revision)
    existing = None if force else find(name, source.revision)
    if existing is not None:
        bar.close()
        return existing, False
    bar.set_postfix_str(next(steps))
    loaded = convert.load(source, task)
    bar.update()
    metadata = {
        "source": str(source.path) if source.kind != "hub" else source.name,
        "source_kind": source.kind,
        "revision": source.revision,
        "architecture": loaded.architecture,
        "parameters": convert.parameter_count(loaded.model),
        "dtype": str(loaded.model.dtype).removeprefix("torch."),
        "task": loaded.task,
        "imported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    all_labels = {"task": loaded.task, "source": source.kind, "owner": "askdb", **(labels or {})}
    bar.set_postfix_str(next(steps))
    with bentoml.models.create(name, labels=all_labels, metadata=metadata) as model:
        convert.save(loaded, source, Path(model.path))
        bar.update()
        bar.set_postfix_str(next(steps))
    bar.update()
    bar.close()
    return bentoml.models.get(model.tag), True


def import_defaults(progress: bool = True) -> list[tuple[bentoml.Model, bool]]:
    results = []
    for default in DEFAULTS:
        results.append(
            import_model(
                str(default.source()),
                default.name,
                task=default.task,
                labels={"askdb-default": "true"},
                progress=progress,
            )
        )
    return results


__all__ = ["ModelImportError", "find", "import_defaults", "import_model"]
