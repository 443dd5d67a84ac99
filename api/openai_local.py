"""Chat and completions served by askdb's own engine: grammars, tools, log-probabilities, n choices.

What the LangChain path (providers/) cannot carry goes straight to the LLM runner: the request
becomes `n` GenRequests that share one prefix group (the engine prefills the prompt once and copies
its KV cache to the other rows, runners/fanout.py), each with its own seed (seed + i when the
client gave one, so a seeded call repeats itself), the grammar from `response_format` or a forced
tool call, and the number of alternatives wanted for log-probabilities. Results come back as the
typed responses of api/openai_protocol.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from api.openai_errors import APIError
from api.openai_grammar import GrammarFor, for_chat, for_response_format
from api.openai_protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from api.openai_tools import offered, parse_calls, to_runner
from runners import client as runner_client
from runners.schemas import GenRequest, GenResult
from runners.schemas import TokenLogprob as RunnerLogprob

GRAMMAR_ERROR = "grammar is invalid"


def fan_out(base: GenRequest, n: int) -> list[GenRequest]:
    """`n` rows of one request: same prompt and prefix group, own id and seed."""
    group = uuid.uuid4().hex if n > 1 else None
    return [
        base.model_copy(
            update={
                "seed": None if base.seed is None else base.seed + i,
                "id": uuid.uuid4().hex,
                "prefix_group": group,
            }
        )
        for i in range(n)
    ]


def _jobs(
    body: ChatCompletionRequest | CompletionRequest, grammar: GrammarFor | None, **what: Any
) -> tuple[list[GenRequest], GrammarFor | None]:
    """The request's `n` rows: `what` says what to generate, the sampling fields come from `body`."""
    base = GenRequest(
        **what,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops(),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        grammar=grammar.grammar if grammar else None,
    )
    return fan_out(base, body.n), grammar


def chat_jobs(body: ChatCompletionRequest) -> tuple[list[GenRequest], GrammarFor | None]:
    return _jobs(
        body,
        for_chat(body),
        messages=to_runner(body.messages),
        tools=offered(body),
        max_new_tokens=body.budget(),
        logprobs=body.wanted_logprobs(),
    )


def completion_jobs(body: CompletionRequest) -> tuple[list[GenRequest], GrammarFor | None]:
    grammar = for_response_format(body.response_format)
    return _jobs(body, grammar, prompt=body.text(), max_new_tokens=body.max_tokens, logprobs=body.logprobs)


def raise_for(code: str | None, error: str | None, grammar: GrammarFor | None) -> None:
    """A failed generation as the caller's error; a grammar that would not compile names its field."""
    if grammar is not None and code == "invalid" and (error or "").startswith(GRAMMAR_ERROR):
        raise APIError(400, f"{grammar.field}: {error}", grammar.field, "invalid_grammar")
    runner_client.raise_for(code, error)


async def generate_all(runner: Any, jobs: list[GenRequest], grammar: GrammarFor | None) -> list[GenResult]:
    results = await asyncio.gather(*(runner_client.generate(runner, j) for j in jobs))
    for r in results:
        if r.finish_reason == "error":
            raise_for(r.code, r.error, grammar)
    return list(results)


def usage_of(results: list[GenResult]) -> Usage:
    """The prompt once (the rows share it), every choice's tokens."""
    return Usage.of(results[0].prompt_tokens, sum(r.completion_tokens for r in results))


def _bytes(token: str) -> list[int]:
    return list(token.encode())


def chat_logprobs(lps: list[RunnerLogprob] | None) -> ChoiceLogprobs | None:
    if lps is None:
        return None
    content = [
        TokenLogprob(
            token=t.token,
            logprob=t.logprob,
            bytes=_bytes(t.token),
            top_logprobs=[TopLogprob(token=a, logprob=b, bytes=_bytes(a)) for a, b in t.top],
        )
        for t in lps
    ]
    return ChoiceLogprobs(content=content)


def completion_logprobs(lps: list[RunnerLogprob] | None, offset: int = 0) -> CompletionLogprobs | None:
    if lps is None:
        return None
    out = CompletionLogprobs()
    for t in lps:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append(dict(t.top))
        out.text_offset.append(offset)
        offset += len(t.token)
    return out


def chat_message(body: ChatCompletionRequest, text: str, reason: str) -> tuple[AssistantMessage, str]:
    """The reply as content or tool calls, and its finish reason ("tool_calls" when it called)."""
    if not body.calls_tools():
        return AssistantMessage(content=text), reason
    content, calls = parse_calls(text, {t.function.name for t in body.tools or []})
    finish = "tool_calls" if calls and reason == "stop" else reason
    return AssistantMessage(content=content, tool_calls=calls or None), finish


async def chat(body: ChatCompletionRequest, runner: Any, cid: str, model: str) -> ChatCompletion:
    jobs, grammar = chat_jobs(body)
    results = await generate_all(runner, jobs, grammar)
    choices = []
    for i, r in enumerate(results):
        message, finish = chat_message(body, r.text, r.finish_reason)
        choices.append(
            ChatChoice(index=i, message=message, finish_reason=finish, logprobs=chat_logprobs(r.logprobs))  # type: ignore[arg-type]
        )
    return ChatCompletion(id=cid, model=model, choices=choices, usage=usage_of(results))


async def completion(body: CompletionRequest, runner: Any, cid: str, model: str) -> Completion:
    jobs, grammar = completion_jobs(body)
    results = await generate_all(runner, jobs, grammar)
    choices = [
        CompletionChoice(
            index=i,
            text=r.text,
            finish_reason=r.finish_reason,  # type: ignore[arg-type]
            logprobs=completion_logprobs(r.logprobs),
        )
        for i, r in enumerate(results)
    ]
    return Completion(id=cid, model=model, choices=choices, usage=usage_of(results))
