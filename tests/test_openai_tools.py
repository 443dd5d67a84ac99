"""Tool calls read back from the model's text, and schemas closed for the grammar (pure functions:
the served behaviour is in tests/test_openai_structured.py)."""

from __future__ import annotations

import json

import jsonschema

from api.openai_grammar import closed
from api.openai_protocol import Message
from api.openai_tools import parse_calls, to_runner


def test_calls_to_known_functions_become_tool_calls_and_the_rest_stays_content() -> None:
    text = (
        'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call><tool_call>{not json}</tool_call>'
    )
    content, calls = parse_calls(text, {"get_weather"})
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert content is not None and content.startswith("Let me check.") and "nope" in content
    assert parse_calls("just prose", {"get_weather"}) == ("just prose", [])
    only, [_] = parse_calls(
        '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>', {"get_weather"}
    )
    assert only is None  # calls only: OpenAI's content is null


def test_a_tool_result_is_named_after_the_call_it_answers() -> None:
    history = [
        Message(
            role="assistant", tool_calls=[{"id": "c1", "function": {"name": "f", "arguments": '{"x": 1}'}}]
        ),
        Message(role="tool", tool_call_id="c1", content="42"),
        Message(role="developer", content="be brief"),
    ]
    assistant, tool, dev = to_runner(history)
    assert assistant.tool_calls == [{"name": "f", "arguments": {"x": 1}}]
    assert (tool.role, tool.name, tool.content) == ("tool", "f", "42")
    assert dev.role == "system"


def test_closing_a_schema_keeps_what_it_accepts_a_subset() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"const": {"properties": 1}}}}},
        "$defs": {"x": {"properties": {}}},
        "anyOf": [{"properties": {"a": {}}}],
    }
    shut = closed(schema)
    assert shut["additionalProperties"] is False and shut["properties"]["a"]["additionalProperties"] is False
    assert shut["$defs"]["x"]["additionalProperties"] is False
    assert shut["anyOf"][0]["additionalProperties"] is False
    assert shut["properties"]["a"]["properties"]["b"] == {"const": {"properties": 1}}  # values untouched
    assert closed({"properties": {}, "additionalProperties": True})["additionalProperties"] is True
    good = {"a": {"b": {"properties": 1}}}
    jsonschema.validate(good, shut)
    jsonschema.validate(good, schema)  # whatever the closed schema accepts, the original does
