"""The import CLI against real files: hub snapshot layout, local dir, GGUF, and every kind of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest

from models.defaults import DEFAULTS
from models.source import sha256_of
from tests.servers import ROOT

MINILM = next(d for d in DEFAULTS if d.task == "feature-extraction")


def run_cli(*args: str, home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "models", "import", *args, "--quiet"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def stored(home: Path) -> list[str]:
    root = home / "models"
    return (
        sorted(p.parent.name + ":" + p.name for p in root.glob("*/*") if p.is_dir()) if root.exists() else []
    )


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A hub cache laid out as huggingface_hub writes it: blobs, snapshots/<commit>, refs/main."""
    cache = tmp_path_factory.mktemp("hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--acme--mini-encoder"
    snap = repo / "snapshots" / commit
    shutil.copytree(MINILM.source(), snap)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache, commit


def test_hub_id_imports_from_snapshot_with_revision(tmp_path: Path, hub_cache: tuple[Path, str]) -> None:
    cache, commit = hub_cache
    out = run_cli("acme/mini-encoder", "--name", "mini", home=tmp_path, env={"HF_HUB_CACHE": str(cache)})
    assert out.returncode == 0, out.stderr
    assert "mini:" in out.stdout and "imported" in out.stdout
    model = _get(tmp_path, "mini")
    assert model["metadata"]["revision"] == commit
    assert model["metadata"]["source"] == "acme/mini-encoder"
    assert model["metadata"]["task"] == "feature-extraction"
    assert model["metadata"]["architecture"] == "BertModel"
    assert 22_000_000 < model["metadata"]["parameters"] < 23_000_000
    assert model["labels"]["task"] == "feature-extraction"
    files = {p.name for p in Path(model["path"]).iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json", "modules.json", "1_Pooling"} <= files


def test_local_dir_import_is_idempotent(tmp_path: Path) -> None:
    first = run_cli(str(MINILM.source()), "--name", "enc", home=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_cli(str(MINILM.source()), "--name", "enc", home=tmp_path)
    assert second.returncode == 0 and "already in store" in second.stdout
    assert len(stored(tmp_path)) == 1
    assert _get(tmp_path, "enc")["metadata"]["revision"].startswith("sha256:")


BAD_INPUTS = {
    "missing path": (lambda d: str(d / "nope" / "model.gguf"), "no such file"),
    "not a model file": (lambda d: _write(d / "notes.txt", b"hello, not a model"), "not a GGUF"),
    "corrupt gguf": (lambda d: _write(d / "bad.gguf", b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64), ""),
    "directory without config": (lambda d: str(_mkdir(d / "empty")), "no config.json"),
    "unsupported architecture": (
        lambda d: str(
            _mkdir(d / "alien", {"config.json": '{"model_type": "alien-net", "architectures": ["X"]}'})
        ),
        "unsupported",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_leaves_store_clean(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    home = tmp_path / "home"
    source = make(tmp_path)
    out = run_cli(source, "--name", "bad", home=home)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert expected.lower() in lines[0].lower()
    assert "Traceback" not in out.stderr
    assert stored(home) == []


def test_embedded_defaults_are_stored_with_metadata() -> None:
    llm = bentoml.models.get("smollm2-135m-instruct:latest")
    meta = llm.info.metadata
    gguf = next(d for d in DEFAULTS if d.task == "text-generation").source()
    assert meta["source_kind"] == "gguf" and meta["revision"] == "sha256:" + sha256_of(gguf)
    assert meta["task"] == "text-generation" and meta["architecture"] == "LlamaForCausalLM"
    assert meta["dtype"] == "float32" and 130_000_000 < meta["parameters"] < 140_000_000
    assert llm.info.labels["askdb-default"] == "true"
    files = {p.name for p in Path(llm.path).iterdir()}
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= files
    assert (
        "chat_template" in (Path(llm.path) / "tokenizer_config.json").read_text()
        or (Path(llm.path) / "chat_template.jinja").exists()
    )


def test_defaults_second_run_does_nothing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "models", "import", "--defaults", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already in store") == len(DEFAULTS)


def _get(home: Path, name: str) -> dict:
    code = (
        f"import json, bentoml; m = bentoml.models.get({name!r}); "
        "print(json.dumps({'metadata': m.info.metadata, 'labels': m.info.labels, 'path': m.path}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"BENTOML_HOME": str(home), "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _mkdir(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path
