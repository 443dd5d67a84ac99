"""settings.py: the one table of ASKDB_* settings, the `askdb config` command, and the README's copy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import settings

ROOT = Path(__file__).resolve().parent.parent
SERVED = [
    "service.py",
    "askdb_cli.py",
    "api",
    "models",
    "observability",
    "pipeline",
    "providers",
    "runners",
    "samples",
]


def _sources() -> list[Path]:
    files: list[Path] = []
    for name in SERVED:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _cli(*args: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASKDB_")}
    done = subprocess.run(
        [sys.executable, "-m", "askdb_cli", "config", *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout


def test_readme_table_is_generated_from_settings() -> None:
    """Edit settings.py, then run `python -m askdb_cli config --readme`."""
    assert settings.readme_block(settings.README.read_text()) == settings.markdown()
    listed = re.findall(r"^\| `(ASKDB_\w+)`", settings.markdown(), re.M)
    assert listed == [settings.variable(n) for n in settings.Settings.model_fields]


def test_no_module_reads_askdb_variables_itself() -> None:
    """Only settings.py reads ASKDB_* from the environment; every name the code mentions is declared."""
    reading = re.compile(r"""environ(?:\.get)?[\(\[]\s*f?["']ASKDB_|getenv\(\s*f?["']ASKDB_""")
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if reading.search(p.read_text())]
    assert offenders == []
    declared = {settings.variable(n) for n in settings.Settings.model_fields}
    mentioned = {m for p in _sources() for m in re.findall(r"ASKDB_[A-Z0-9_]*[A-Z0-9]", p.read_text())}
    assert mentioned - declared == set()


def test_values_parse_once_with_clear_errors() -> None:
    s = settings.load({"ASKDB_LLM_SLOTS": "4", "ASKDB_LLM_GRAPHS": "0", "ASKDB_QUALITY_LOG": "off"})
    assert (s.llm_slots, s.llm_graphs, s.quality_log, s.max_rows) == (4, False, False, 1000)
    blank = settings.load({"ASKDB_LLM_SLOTS": "", "ASKDB_LLM_COMPILE_CACHE": "", "OTHER": "x"})
    assert blank.llm_slots is None and blank.llm_compile_cache == ""  # blank: unset; blank text stays
    with pytest.raises(ValidationError, match="ASKDB_MAX_ROWS"):
        settings.load({"ASKDB_MAX_ROWS": "lots"})


def test_config_command_prints_value_default_and_source() -> None:
    secret = "sk-never-printed-0123456789"
    out = _cli(env={"ASKDB_LLM_SLOTS": "4", "ASKDB_API_KEYS": secret, "ASKDB_MAX_ROWS": "50"})
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {settings.variable(n) for n in settings.Settings.model_fields}
    assert rows["ASKDB_LLM_SLOTS"][1] == "4" and rows["ASKDB_LLM_SLOTS"][-1] == "env"
    assert rows["ASKDB_MAX_ROWS"][1:] == ["50", "1000", "env"]
    assert rows["ASKDB_QUERY_TIMEOUT_S"][1:] == ["10.0", "10.0", "default"]
    assert secret not in out and "<set, 27 characters>" in out
    assert _cli("--markdown").strip() == settings.markdown()


def test_runner_constants_come_from_the_table_in_a_fresh_process() -> None:
    code = "import json; from runners import config; print(json.dumps([config.LLM_SLOTS, config.ON_GPU]))"
    env = {**os.environ, "ASKDB_LLM_SLOTS": "3", "ASKDB_DEVICE": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert json.loads(done.stdout) == [3, False], done.stderr
