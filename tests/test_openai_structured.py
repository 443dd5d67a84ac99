"""Structured outputs, tools, log-probabilities and n choices on /v1, through the official `openai`
client against the real server (tiny SmolLM2, sampled at temperature 1 with seeds: the grammar,
not luck, is what makes every output valid)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.metrics_util import sample_sum, wait_idle
from tests.servers import BentoServer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "Berlin", "Rome"]},
    },
    "required": ["name", "age", "city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 12}},
            "required": ["zone"],
        },
    },
}
ASK = [{"role": "user", "content": "Describe a person who lives in Europe."}]
WEATHER_Q = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def oa(askdb: BentoServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{askdb.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_json_schema_outputs_always_validate(oa: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    outputs = []
    for seed in (1, 2):  # 2 calls x n=12: 24 sampled outputs
        reply = oa.chat.completions.create(
            model="local", messages=ASK, response_format=fmt, temperature=1.0, seed=seed, n=12, max_tokens=48
        )
        assert len(reply.choices) == 12 and [c.index for c in reply.choices] == list(range(12))
        outputs += [c.message.content for c in reply.choices if c.finish_reason == "stop"]
    assert len(outputs) >= 20  # a few may hit max_tokens mid-string; those that ended must validate
    for text in outputs:
        jsonschema.validate(json.loads(text), PERSON)
    assert len(set(outputs)) > 5  # sampled, not one answer repeated


def test_json_object_on_completions_and_streaming(oa: openai.OpenAI) -> None:
    fmt = {"type": "json_object"}
    done = oa.completions.create(
        model="local", prompt="A JSON object:", max_tokens=40, temperature=0.8, seed=3, n=4,
        extra_body={"response_format": fmt},
    )  # fmt: skip
    parsed = [json.loads(c.text) for c in done.choices if c.finish_reason == "stop"]
    assert parsed and all(isinstance(p, dict) for p in parsed)
    chunks = list(
        oa.chat.completions.create(
            model="local", messages=ASK, response_format=fmt, max_tokens=40, stream=True, temperature=0
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert isinstance(json.loads(text), dict)


def test_named_and_required_tool_calls_parse_against_their_schema(oa: openai.OpenAI) -> None:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    named = {"type": "function", "function": {"name": "get_time"}}
    names = []
    # required: one or two parallel calls (one per tool at most); named: exactly that one
    for choice, budget in (("required", 100), (named, 60)):
        reply = oa.chat.completions.create(
            model="local", messages=WEATHER_Q, tools=[WEATHER, TIME], tool_choice=choice,
            temperature=1.0, seed=5, n=5, max_tokens=budget,
        )  # fmt: skip
        ended = [c for c in reply.choices if c.finish_reason != "length"]
        assert len(ended) >= 3
        for c in ended:
            assert c.finish_reason == "tool_calls" and c.message.tool_calls and c.message.content is None
            assert len(c.message.tool_calls) <= (2 if choice == "required" else 1)
            for call in c.message.tool_calls:
                assert call.type == "function" and call.id.startswith("call_")
                jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
                names.append((choice == "required", call.function.name))
    assert {n for r, n in names if not r} == {"get_time"}


def test_tool_calls_stream_in_openais_shape(oa: openai.OpenAI) -> None:
    chunks = list(
        oa.chat.completions.create(
            model="local", messages=WEATHER_Q, tools=[WEATHER], tool_choice="required",
            max_tokens=60, temperature=0, stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [tc for d in deltas for tc in d.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens > 0


def test_tool_results_go_back_into_the_prompt(oa: openai.OpenAI) -> None:
    first = oa.chat.completions.create(
        model="local",
        messages=WEATHER_Q,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *WEATHER_Q,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 31, "unit": "C"}'},
    ]
    reply = oa.chat.completions.create(
        model="local", messages=history, tools=[WEATHER], max_tokens=30, temperature=0
    )
    assert reply.choices[0].message.content
    # the tool's result is in the prompt: it holds more tokens than the question alone
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_logprobs_chat_completions_and_stream(oa: openai.OpenAI) -> None:
    args = {"model": "local", "messages": ASK, "max_tokens": 6, "temperature": 0}
    reply = oa.chat.completions.create(**args, logprobs=True, top_logprobs=20)
    content = reply.choices[0].logprobs.content
    assert len(content) == 6 and "".join(t.token for t in content) == reply.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 20 and t.logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert abs(t.logprob - t.top_logprobs[0].logprob) < 1e-4  # greedy: the chosen token is the best
    chunks = list(oa.chat.completions.create(**args, logprobs=True, top_logprobs=2, stream=True))
    streamed = [
        t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content
    ]
    assert [t.token for t in streamed] == [t.token for t in content]
    done = oa.completions.create(
        model="local", prompt="SELECT name FROM", max_tokens=4, temperature=0, logprobs=3
    )
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and all(len(t) <= 3 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == done.choices[0].text and lp.text_offset[0] == 0


def test_n_choices_share_one_prefill(oa: openai.OpenAI, askdb: BentoServer) -> None:
    shared = "askdb_llm_prefill_shared_tokens"
    before = sample_sum(askdb.url, shared, f"{shared}_total")
    reply = oa.chat.completions.create(
        model="local", messages=ASK, n=4, max_tokens=8, temperature=1.0, seed=9
    )
    again = oa.chat.completions.create(
        model="local", messages=ASK, n=4, max_tokens=8, temperature=1.0, seed=9
    )
    assert [c.message.content for c in reply.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in reply.choices}) > 1
    assert 4 <= reply.usage.completion_tokens <= 4 * 8  # every choice's tokens, the prompt once
    # two calls, three rows each copied all but the last prompt token
    assert sample_sum(askdb.url, shared, f"{shared}_total") - before == 6 * (reply.usage.prompt_tokens - 1)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
            "response_format.json_schema.schema",
        ),
        (  # valid JSON Schema, but a regex llguidance cannot compile (lookahead)
            {"response_format": {"type": "json_schema", "json_schema": {
                "name": "x", "schema": {"type": "string", "pattern": "(?=a)b"}}}},
            "response_format",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 17}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}],
          "tool_choice": "required"}, "tools[0].function.parameters"),
    ],
)  # fmt: skip
def test_bad_structured_fields_are_400_naming_the_field(oa: openai.OpenAI, body: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oa.post("/chat/completions", body={"model": "local", "messages": ASK, **body}, cast_to=httpx.Response)
    assert err.value.status_code == 400 and err.value.body["param"] == param
    assert param.split(".")[0].split("[")[0] in err.value.body["message"]


def test_engine_metrics_under_vllms_names(oa: openai.OpenAI, askdb: BentoServer) -> None:
    wait_idle(askdb.url)
    name = {"model_name": oa.models.list().data[0].id}
    families = {
        "tokens": ("vllm:generation_tokens", "vllm:generation_tokens_total"),
        "prompt": ("vllm:prompt_tokens", "vllm:prompt_tokens_total"),
        "ttft": ("vllm:time_to_first_token_seconds", "vllm:time_to_first_token_seconds_count"),
        "itl": ("vllm:inter_token_latency_seconds", "vllm:inter_token_latency_seconds_count"),
        "e2e": ("vllm:e2e_request_latency_seconds", "vllm:e2e_request_latency_seconds_count"),
        "ok": ("vllm:request_success", "vllm:request_success_total"),
    }
    before = {k: sample_sum(askdb.url, *v, **name) for k, v in families.items()}
    reply = oa.chat.completions.create(
        model="local", messages=ASK, max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
    )
    after = {k: sample_sum(askdb.url, *v, **name) for k, v in families.items()}
    grew = {k: after[k] - before[k] for k in families}
    assert grew["tokens"] == 7 and grew["itl"] == 6 and grew["ttft"] == grew["e2e"] == grew["ok"] == 1
    assert grew["prompt"] == reply.usage.prompt_tokens
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert sample_sum(askdb.url, gauge, gauge, **name) == 0  # idle again: nothing holds the cache
