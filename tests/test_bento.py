"""`bentoml build` from bentofile.yaml: the Bento's tag and models, what it carries, both flavours."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import bentoml
import pytest
import yaml
from packaging.requirements import Requirement

from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "deploy/image/build.sh"
BENTOML = str(Path(sys.executable).with_name("bentoml"))
# pyproject dependencies the served Bento does not need: plots for benchmarks, GGUF reading for import.
NOT_SERVED = {"matplotlib", "gguf"}


def build(*args: str) -> tuple[str, list[str], str]:
    """Run the build script; return the Bento tag, the packed model tags and the whole output."""
    out = subprocess.run(
        [str(BUILD), "--bento-only", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tag = re.search(r"^bento: (\S+)$", out.stdout, re.M)
    assert tag, out.stdout
    return tag.group(1), re.findall(r"^model: (\S+)$", out.stdout, re.M), out.stdout


@pytest.fixture(scope="module")
def cpu_bento() -> Iterator[tuple[str, list[str]]]:
    tag, models, _ = build("--flavour", "cpu")
    yield tag, models
    subprocess.run([BENTOML, "delete", "-y", tag], capture_output=True)


def test_build_prints_tag_and_packs_default_models(cpu_bento: tuple[str, list[str]]) -> None:
    tag, models = cpu_bento
    assert tag.startswith("askdb:")
    names = {m.split(":")[0] for m in models}
    assert names == {DEFAULT_LLM_TAG.split(":")[0], DEFAULT_EMBED_TAG.split(":")[0]}
    # the exact versions the model store holds now, not whatever tag was once current
    assert set(models) == {
        str(bentoml.models.get(DEFAULT_LLM_TAG).tag),
        str(bentoml.models.get(DEFAULT_EMBED_TAG).tag),
    }


def test_cpu_bento_installs_torch_from_its_own_cpu_wheel(cpu_bento: tuple[str, list[str]]) -> None:
    path = Path(bentoml.get(cpu_bento[0]).path)
    lock = (path / "env/python/requirements.lock.txt").read_text()
    [torch_line] = [line for line in lock.splitlines() if "torch" in line and "torchvision" not in line]
    assert torch_line == "./wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert (path / "env/python" / torch_line).is_file()
    # nvidia-ml-py (BentoML's GPU monitoring) is tiny; every other nvidia-* wheel is CUDA runtime.
    assert not re.search(r"^nvidia-(?!ml-py==)", lock, re.M), "the CPU lock pulled CUDA libraries"
    assert re.search(r"^bentoml==", lock, re.M)


def test_bento_carries_the_service_and_sample_db_but_no_tests(cpu_bento: tuple[str, list[str]]) -> None:
    src = Path(bentoml.get(cpu_bento[0]).path) / "src"
    for needed in (
        "service.py",
        "runners/llm.py",
        "api/limits.py",
        "samples/chinook.py",
        "data/chinook.sqlite",
        "eval/bank/chinook.yaml",
    ):
        assert (src / needed).is_file(), needed
    for absent in ("tests", "bench", ".venv", "build", "deploy", ".github"):
        assert not (src / absent).exists(), absent
    assert not list(src.rglob("__pycache__"))


def test_bento_env_defaults(cpu_bento: tuple[str, list[str]]) -> None:
    envs = {e.name: e.value for e in bentoml.get(cpu_bento[0]).info.envs}
    assert envs["HF_HUB_OFFLINE"] == "1"
    assert envs["ASKDB_DEVICE"] == "auto"


def test_bentofile_packages_cover_pyproject() -> None:
    """A dependency added to pyproject.toml must reach the image too (or be declared not served)."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    packages = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    shipped = {"torch" if p.startswith("./wheels/torch-") else Requirement(p).name for p in packages}
    wanted = {Requirement(d).name for d in declared} - NOT_SERVED - {"bentoml"}
    assert wanted <= shipped, f"add to bentofile.yaml python.packages: {sorted(wanted - shipped)}"


def test_cuda_flavour_locks_the_cuda_build_of_torch() -> None:
    """The CUDA Bento resolves PyPI's torch with its CUDA runtime wheels and asks for the GPUs."""
    tag, models, _ = build("--flavour", "cuda")
    try:
        bento = bentoml.get(tag)
        # no packed wheel makes this a v2 Bento, whose requirements.txt is the lock
        lock = (Path(bento.path) / "env/python/requirements.txt").read_text()
        assert re.search(r"^torch==2\.13\.0$", lock, re.M), lock
        assert re.search(r"^nvidia-cudnn-cu\d+==", lock, re.M) and "nvidia-cuda-runtime" in lock
        assert not list((Path(bento.path) / "env/python/wheels").glob("torch-*"))
        envs = {e.name: e.value for e in bento.info.envs}
        assert envs["NVIDIA_VISIBLE_DEVICES"] == "all"
        assert bento.info.labels["flavour"] == "cuda"
        assert len(models) == 2
    finally:
        subprocess.run([BENTOML, "delete", "-y", tag], capture_output=True)
