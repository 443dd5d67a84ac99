"""`response_format` and forced tool calls as grammars the engine enforces (llguidance Lark).

The engine masks every token the grammar does not allow (runners/constrain.py), so a reply that
ends with finish_reason "stop" always parses, and validates against the schema. A schema is
checked here first (jsonschema's meta-schema: a 400 naming the field); one that is valid JSON
Schema but uses what llguidance cannot compile fails in the runner, and the route turns that into
a 400 naming the same field (`GrammarFor.field`).

- `json_object`: any JSON object. `json_schema`: that schema (`strict` or not: always enforced),
  objects closed to keys their `properties` do not list unless the schema allows them (`closed`).
- tool_choice `required` / a named function: one `<tool_call>{"name", "arguments"}</tool_call>`
  (with `parallel_tool_calls`, up to one per offered tool, one per line),
  `name` one of the allowed functions and `arguments` valid against that function's `parameters`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema

from api.openai_errors import APIError
from api.openai_protocol import ChatCompletionRequest, ResponseFormat, Tool
from runners.chat_format import CALL_CLOSE, CALL_OPEN

ANY_OBJECT: dict[str, Any] = {"type": "object"}
NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class GrammarFor:
    grammar: str
    field: str  # the request field it came from, for a 400 if it does not compile


def _checked(schema: dict[str, Any], field: str) -> dict[str, Any]:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        why = f"{field}: not a valid JSON schema: {err.message}"
        raise APIError(400, why, field, "invalid_schema") from err
    return schema


_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")


def closed(schema: Any) -> Any:
    """`schema` with every object that lists `properties` but says nothing of others closed to
    others (`additionalProperties: false`), as OpenAI's strict mode and vLLM's xgrammar read it.
    Outputs still validate against the schema as sent; a small model just cannot wander into
    invented keys until max_tokens. An explicit `additionalProperties` is kept; values such as
    `const`, `enum` or `default` are never touched."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in _ONE:
        if isinstance(out.get(key), dict):
            out[key] = closed(out[key])
    for key in _MANY:
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _lark_json(schema: dict[str, Any]) -> str:
    return "%json " + json.dumps(closed(schema), separators=(",", ":"))


def for_response_format(fmt: ResponseFormat | None) -> GrammarFor | None:
    if fmt is None or fmt.type == "text":
        return None
    field = "response_format"
    if fmt.type == "json_object":
        return GrammarFor(f"start: {_lark_json(ANY_OBJECT)}", field)
    assert fmt.json_schema is not None  # ResponseFormat checks it
    schema = _checked(fmt.json_schema.schema_, "response_format.json_schema.schema")
    return GrammarFor(f"start: {_lark_json(schema)}", field)


def call_schema(tool: Tool, index: int) -> dict[str, Any]:
    params = tool.function.parameters
    args = _checked(params, f"tools[{index}].function.parameters") if params else NO_ARGUMENTS
    return {
        "type": "object",
        "properties": {"name": {"const": tool.function.name}, "arguments": args},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def for_tools(body: ChatCompletionRequest) -> GrammarFor | None:
    """A grammar when the reply must be tool calls (required or named), else None."""
    choice = body.choice()
    if not body.tools or choice in ("none", "auto"):
        return None
    picked = [(i, t) for i, t in enumerate(body.tools) if choice == "required" or t.function.name == choice]
    schemas = [call_schema(t, i) for i, t in picked]
    one = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    call = f"call: {json.dumps(CALL_OPEN)} {_lark_json(one)} {json.dumps(CALL_CLOSE)}"
    several = body.parallel_tool_calls and choice == "required" and len(picked) > 1
    # parallel: one call per line, at most as many as there are tools (a small model would go on
    # calling until max_tokens otherwise)
    start = f'start: call ("\\n" call){{0,{len(picked) - 1}}}' if several else "start: call"
    return GrammarFor(f"{start}\n{call}", "tools")


def for_chat(body: ChatCompletionRequest) -> GrammarFor | None:
    tools = for_tools(body)
    fmt = for_response_format(body.response_format)
    if tools is not None and fmt is not None:
        raise APIError(
            400, "response_format: cannot be combined with a required tool call", "response_format"
        )
    if body.tools and body.choice() == "auto":  # auto: unforced, but still check the schemas
        for i, t in enumerate(body.tools):
            call_schema(t, i)
    return tools or fmt
