"""Chat messages (and tools) to the model's prompt, with its chat template.

A template that knows tools (its text uses `tools`, as Qwen2.5's, Llama 3.1's or Hermes' do) gets
them the transformers way: `apply_chat_template(messages, tools=...)`, assistant turns carrying
`tool_calls`, results as `role: "tool"` turns. A template that does not (SmolLM2-135M's) gets the
generic prompt instead, so any chat model can be offered tools:

- a system message listing the functions as JSON and asking for each call as
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (the Hermes format many models know);
- an assistant turn's earlier calls written back in that same form;
- a tool result as a user turn `<tool_response>{"name": ..., "content": ...}</tool_response>` (some
  templates refuse roles other than user and assistant).

Replies are read back in that format either way (api/openai_tools.py), and under tool_choice
`required` or a named function a grammar makes the model write exactly it (api/openai_grammar.py).
"""

from __future__ import annotations

import json
from typing import Any

from runners.schemas import ChatMessage

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
GENERIC_INSTRUCTIONS = (
    "You can call functions. To call one, reply with only\n"
    f'{CALL_OPEN}{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}{CALL_CLOSE}\n'
    "(one such line per call). Functions:\n"
)


def knows_tools(tokenizer: Any) -> bool:
    template = tokenizer.chat_template
    text = " ".join(template.values()) if isinstance(template, dict) else str(template or "")
    return "tools" in text


def call_text(call: dict[str, Any]) -> str:
    """One call as the generic format writes it."""
    return f"{CALL_OPEN}{json.dumps({'name': call['name'], 'arguments': call['arguments']})}{CALL_CLOSE}"


def _native(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"type": "function", "function": c} for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None and m.role == "tool":
        out["name"] = m.name
    return out


def _generic(m: ChatMessage) -> dict[str, Any]:
    if m.role == "tool":
        body = json.dumps({"name": m.name, "content": m.content}) if m.name else m.content
        return {"role": "user", "content": f"<tool_response>{body}</tool_response>"}
    calls = "\n".join(call_text(c) for c in m.tool_calls or [])
    return {"role": m.role, "content": "\n".join(p for p in (m.content, calls) if p)}


def _generic_tools(msgs: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    listing = GENERIC_INSTRUCTIONS + "\n".join(json.dumps(t) for t in tools)
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": f"{msgs[0]['content']}\n\n{listing}"}, *msgs[1:]]
    return [{"role": "system", "content": listing}, *msgs]


def render(tokenizer: Any, messages: list[ChatMessage], tools: list[dict[str, Any]] | None) -> str:
    if knows_tools(tokenizer):
        msgs = [_native(m) for m in messages]
        extra = {"tools": [{"type": "function", "function": t} for t in tools]} if tools else {}
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **extra)
    msgs = [_generic(m) for m in messages]
    if tools:
        msgs = _generic_tools(msgs, tools)
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
