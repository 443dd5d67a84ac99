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


def test_readme_openai_structured_and_tools_example_runs(askdb: BentoServer) -> None:
    """`beta.chat.completions.parse` with a pydantic model and a tool round trip, as written."""
    [example] = [b for b in python_blocks((ROOT / "README.md").read_text()) if "completions.parse" in b]
    code = example.replace("http://localhost:3000", askdb.url)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    city, answer = printed.getvalue().splitlines()[:2]
    assert city.startswith("name=") and "country=" in city  # a parsed City, not None
    assert answer.startswith("get_weather ")  # the forced call, then an answer after the tool's result
