"""askdb's text-to-SQL pipeline: one module per step, composed into an LCEL chain by `build_chain`."""

from __future__ import annotations

from typing import Any

__all__ = ["AskFailed", "AskOptions", "build_chain"]


def __getattr__(name: str) -> Any:
    # lazy: the data steps (databases, schema) must not import LangChain's chat stack
    if name in ("build_chain", "AskOptions"):
        from pipeline import chain

        return getattr(chain, name)
    if name == "AskFailed":
        from pipeline.repair import AskFailed

        return AskFailed
    raise AttributeError(name)
