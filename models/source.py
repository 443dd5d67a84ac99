"""Resolve what the user named (hub id, snapshot directory, GGUF file) into files on disk."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelImportError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Source:
    kind: str  # "hub" | "dir" | "gguf"
    name: str  # what the user typed
    path: Path  # local directory, or the .gguf file
    revision: str  # hub commit, or "sha256:<hex>" of the source file(s)


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _dir_digest(path: Path) -> str:
    # Hash of the weight files only: cheap enough, and it changes whenever the model does.
    weights = sorted(p for p in path.rglob("*") if p.suffix in {".safetensors", ".bin"} and p.is_file())
    digest = hashlib.sha256()
    for w in weights:
        digest.update(w.relative_to(path).as_posix().encode())
        digest.update(sha256_of(w).encode())
    return digest.hexdigest()


def _check_gguf(path: Path) -> None:
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelImportError(f"{path}: not a GGUF file (bad magic bytes)")


def _check_dir(path: Path) -> None:
    config = path / "config.json"
    if not config.is_file():
        raise ModelImportError(f"{path}: no config.json, so this is not a Hugging Face model directory")
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelImportError(f"{config}: not valid JSON ({exc.__class__.__name__})") from exc


def _from_hub(repo_id: str, revision: str | None) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        local = Path(snapshot_download(repo_id, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise ModelImportError(f"{repo_id}: not in the local hub cache and the hub is unreachable") from exc
    except HfHubHTTPError as exc:
        raise ModelImportError(f"{repo_id}: hub refused the download ({exc.__class__.__name__})") from exc
    _check_dir(local)
    # snapshot folders are named by commit hash
    return Source("hub", repo_id, local, local.name)


def resolve(name: str, revision: str | None = None) -> Source:
    path = Path(name).expanduser()
    if path.is_file():
        _check_gguf(path)
        return Source("gguf", name, path.resolve(), "sha256:" + sha256_of(path))
    if path.is_dir():
        _check_dir(path)
        return Source("dir", name, path.resolve(), "sha256:" + _dir_digest(path))
    looks_like_path = name.startswith((".", "/", "~")) or name.endswith(".gguf") or path.suffix
    if HUB_ID.match(name) and not looks_like_path:
        return _from_hub(name, revision)
    raise ModelImportError(f"{name}: no such file or directory, and not a hub id of the form org/name")
