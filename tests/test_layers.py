"""Dependencies point one way (docs/architecture.md): every module's imports, read with `ast`.

    service.py -> api/ -> pipeline/  (text-to-SQL: takes a chat model and Embeddings as arguments)
                       -> providers/ -> runners/ -> observability/ -> settings
A package may import only what its row below names (its own modules included); a new back-edge,
e.g. pipeline/ importing providers/ or providers/ importing pipeline/, fails here by file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {
    p.name if p.is_dir() else p.stem
    for p in ROOT.iterdir()
    if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.is_file())
}
# package -> first-party modules it may import (a dotted name allows that module and its children)
ALLOWED: dict[str, set[str]] = {
    "settings": {"models.defaults"},  # the default model tags
    "samples": {"samples", "settings"},
    "observability": {"observability", "settings"},
    "runners": {"runners", "settings", "observability", "models"},
    "providers": {"providers", "settings", "runners"},
    # observability.audit: the example review CLI writes the audit trail (a file, not HTTP)
    "pipeline": {"pipeline", "settings", "samples", "observability.audit"},
    "api": {"api", "settings", "samples", "observability", "runners", "providers", "pipeline", "models"},
}
# third-party packages that mean HTTP serving or a model provider: the pipeline is neither
NOT_IN_PIPELINE = {
    "bentoml",
    "_bentoml_sdk",
    "starlette",
    "fastapi",
    "aiohttp",
    "httpx",
    "openai",
    "langchain_openai",
}


def imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import, nested ones included; `from a import b` gives `a.b`
    when b is a module of a, else `a`."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = ROOT.joinpath(*node.module.split("."))
            for alias in node.names:
                sub = base / alias.name
                is_module = sub.with_suffix(".py").exists() or (sub / "__init__.py").exists()
                out.append((node.lineno, f"{node.module}.{alias.name}" if is_module else node.module))
    return out


def violations(package: str, path: str, source: str) -> list[str]:
    allowed = ALLOWED[package]
    found = []
    for line, name in imported(ast.parse(source)):
        top = name.split(".")[0]
        if top in FIRST_PARTY:
            if not any(name == a or name.startswith(f"{a}.") for a in allowed):
                found.append(f"{path}:{line} imports {name}")
        elif package == "pipeline" and top in NOT_IN_PIPELINE:
            found.append(f"{path}:{line} imports {name} (HTTP or provider code in the pipeline)")
    return found


def modules(package: str) -> list[Path]:
    single = ROOT / f"{package}.py"
    return [single] if single.exists() else sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    files = modules(package)
    assert files, package
    found = [v for f in files for v in violations(package, str(f.relative_to(ROOT)), f.read_text())]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("package", "source"),
    [
        ("pipeline", "from providers import Models"),
        ("pipeline", "import runners.client"),
        ("pipeline", "def f():\n    from api.protocol import AskResponse\n"),  # nested imports count
        ("pipeline", "from observability import metrics"),
        ("pipeline", "import bentoml"),
        ("providers", "from pipeline.chain import build_chain"),
        ("providers", "from api import protocol"),
        ("runners", "from providers.local import RunnerChatModel"),
        ("runners", "from api.access import tenant_of"),
        ("observability", "from runners import client"),
        ("api", "from service import AskDB"),
    ],
)
def test_a_back_edge_is_caught(package: str, source: str) -> None:
    assert violations(package, "x.py", source)


def test_allowed_edges_pass() -> None:
    assert not violations(
        "pipeline", "x.py", "from pipeline import databases\nfrom observability import audit"
    )
    assert not violations("providers", "x.py", "from runners import client\nimport settings")
