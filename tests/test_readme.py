"""The README's Python example runs as written against a live server, so the docs cannot drift."""

from __future__ import annotations

import contextlib
import io
import re

from tests.servers import ROOT, BentoServer


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def test_readme_client_example_runs(askdb: BentoServer) -> None:
    [example] = [b for b in python_blocks((ROOT / "README.md").read_text()) if "SyncHTTPClient" in b]
    code = example.replace("http://localhost:3000", askdb.url)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    output = printed.getvalue()
    assert "Paris" in output and "'completion_tokens': 8" in output and " length " in output
    assert output.splitlines()[-1] == "384 2"
