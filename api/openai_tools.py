"""Tool calls in and out of the model's text, and OpenAI messages as the runner's chat messages.

The model writes calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(runners/chat_format.py says why that format). A reply's calls to functions that exist become
OpenAI `tool_calls` (arguments as JSON text, as OpenAI sends them); the text around them stays the
message's content. Text that only looks like a call (bad JSON, an unknown name) stays content: under
tool_choice `auto` nothing forces the model, under `required`/named the grammar does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from api.openai_protocol import ChatCompletionRequest, FunctionCall, Message, ToolCall
from runners.chat_format import CALL_CLOSE, CALL_OPEN
from runners.schemas import ChatMessage

_CALL = re.compile(re.escape(CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(CALL_CLOSE), re.DOTALL)
_ROLES = {"developer": "system"}


def parse_calls(text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a reply; content is None when the reply was calls only."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in _CALL.finditer(text):
        try:
            obj = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get("name") not in names:
            continue
        args = obj.get("arguments", {})
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(ToolCall(function=FunctionCall(name=obj["name"], arguments=json.dumps(args))))
    if not calls:
        return text, []
    content = "".join([*kept, text[last:]]).strip()
    return content or None, calls


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # passed on as the client wrote it


def to_runner(messages: list[Message]) -> list[ChatMessage]:
    """The conversation for the runner; a tool result is named after the call it answers."""
    called = {c.id: c.function.name for m in messages for c in m.tool_calls or []}
    out = []
    for m in messages:
        calls = [
            {"name": c.function.name, "arguments": _arguments(c.function.arguments)}
            for c in m.tool_calls or []
        ]
        name = (m.name or called.get(m.tool_call_id or "")) if m.role == "tool" else None
        out.append(
            ChatMessage(
                role=_ROLES.get(m.role, m.role),  # type: ignore[arg-type]
                content=m.text(),
                tool_calls=calls or None,
                tool_call_id=m.tool_call_id,
                name=name,
            )
        )
    return out


def offered(body: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    """The functions shown to the model (none under tool_choice none)."""
    if not body.calls_tools():
        return None
    return [t.function.model_dump(exclude_none=True, exclude={"strict"}) for t in body.tools or []]
