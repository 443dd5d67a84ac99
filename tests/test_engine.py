"""The LLM engine in-process (runners/engine.py): every request's greedy output is what transformers'
`generate` gives for that request alone, whatever its neighbours do (joining mid-flight, leaving
early, other prompt lengths, a slot reused after a cancel), on several architectures; sampling,
seeds, log-probabilities, cancellation and the bounded queue behave as documented."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import bentoml
import pytest
import torch
import transformers

from models.defaults import DEFAULT_LLM_TAG
from runners.engine import Engine
from runners.model import SLOT_ATTENTION, LoadedModel
from runners.schemas import GenRequest, GenResult, StreamEvent

PROMPTS = [
    "The capital of France is",
    "SELECT name FROM Track WHERE",
    "Once upon a time, in a small village by the sea, there lived a fisherman who",
    "a",
    "def add(a, b):\n    return",
]


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(bentoml.models.get(DEFAULT_LLM_TAG).path)


def tiny(arch: str, vocab: int) -> transformers.PreTrainedModel:
    """A randomly initialised 3-layer model of `arch` (greedy output depends only on the weights)."""
    common = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    sliding = {
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    }
    configs = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "gemma2": lambda: transformers.Gemma2Config(**common, head_dim=16, **sliding),
        "gemma3_text": lambda: transformers.Gemma3TextConfig(**common, head_dim=16, **sliding),
        "gpt_neox": lambda: transformers.GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
        ),
        "phi3": lambda: transformers.Phi3Config(**common, pad_token_id=0),
    }
    torch.manual_seed(0)
    config = configs[arch]()
    try:
        return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    except ValueError:  # no sdpa for this architecture (gemma2's soft-capping)
        return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def reference(
    model: transformers.PreTrainedModel, tok: transformers.PreTrainedTokenizerBase, req: GenRequest
) -> str:
    """transformers' own greedy generate for this request alone, with its own attention."""
    ids = tok(req.prompt, return_tensors="pt", add_special_tokens=False)
    eos = None if req.ignore_eos else model.generation_config.eos_token_id
    mine = model.config._attn_implementation
    model.config._attn_implementation = "sdpa" if mine == SLOT_ATTENTION else mine
    try:
        out = model.generate(
            **ids, max_new_tokens=req.max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
    finally:
        model.config._attn_implementation = mine
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


class Watch:
    """Collects one request's events; lets a test wait until it has produced n of them."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: StreamEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, n: int = 1, final: bool = False, timeout: float = 120) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: self.done if final else len(self.events) >= n, timeout=timeout)
        assert ok, f"only {len(self.events)} events after {timeout} s"

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1].finish_reason is not None

    def result(self) -> GenResult:
        from runners.sequence import collect

        return collect(self.events)


@pytest.fixture(scope="module")
def smol(
    tokenizer: transformers.PreTrainedTokenizerBase,
) -> Iterator[tuple[Engine, transformers.PreTrainedModel]]:
    lm = LoadedModel.load(bentoml.models.get(DEFAULT_LLM_TAG).path)
    # a small chunk, so prompts are prefilled in several chunks interleaved with decoding
    yield Engine(lm, slots=4, context=1024, prefill_chunk=8, max_waiting=2), lm.model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2", "gemma3_text", "gpt_neox", "phi3"])
def test_greedy_matches_generate_alone_on_each_architecture(arch: str, tokenizer) -> None:
    model = tiny(arch, len(tokenizer))
    engine = Engine(LoadedModel.wrap(model, tokenizer), slots=3, context=256, prefill_chunk=8)
    reqs = [
        GenRequest(prompt=p, max_new_tokens=n, ignore_eos=True)
        for p, n in zip(PROMPTS, [20, 5, 30, 12, 9], strict=True)
    ]
    results = engine.run(reqs, timeout=300)  # 5 requests, 3 slots: two wait, then reuse freed slots
    for req, got in zip(reqs, results, strict=True):
        assert got.text == reference(model, tokenizer, req), (arch, req.prompt)
        assert (got.finish_reason, got.completion_tokens) == ("length", req.max_new_tokens)


def test_joining_mid_flight_and_leaving_early_change_nobody(smol, tokenizer) -> None:
    """The real model: a long request runs; others join while it decodes (one with a prompt that
    takes several prefill chunks), one leaves early by its budget, one by a stop string."""
    engine, model = smol
    long = GenRequest(prompt=PROMPTS[2], max_new_tokens=40)
    joiners = [
        GenRequest(prompt=PROMPTS[0], max_new_tokens=3),
        GenRequest(prompt=PROMPTS[1] + " the genre is", max_new_tokens=15),
        GenRequest(prompt="Count: one, two, three,", max_new_tokens=24, stop=[","]),
    ]
    first = Watch()
    engine.submit(long, first)
    first.wait(5)  # decoding: the others join a running loop
    watches = []
    for req in joiners:
        watches.append(Watch())
        engine.submit(req, watches[-1])
    for w in [first, *watches]:
        w.wait(final=True)
    assert first.result().text == reference(model, tokenizer, long)
    for req, w in zip(joiners, watches, strict=True):
        want = reference(model, tokenizer, req)
        if req.stop:
            want = want[: want.index(",")] if "," in want else want
        assert w.result().text == want, req.prompt
    assert watches[2].result().finish_reason == "stop" and "," not in watches[2].result().text


def test_a_cancelled_slot_is_freed_at_the_next_step_and_reused(smol, tokenizer) -> None:
    engine, model = smol
    gone = GenRequest(prompt=PROMPTS[3], max_new_tokens=500, ignore_eos=True)
    watch = Watch()
    engine.submit(gone, watch)
    watch.wait(3)
    engine.cancel([gone.id])
    watch.wait(final=True)
    assert watch.events[-1].finish_reason == "cancelled"
    assert watch.events[-1].completion_tokens < 40  # stopped within a few steps, not after 500
    assert all(row is None for row in engine.rows)  # the slot is free again
    after = GenRequest(prompt=PROMPTS[0], max_new_tokens=10)
    [result] = engine.run([after])
    assert result.text == reference(model, tokenizer, after)  # the reused slot holds nothing stale


def test_a_full_queue_refuses_at_once(smol) -> None:
    engine, _ = smol
    reqs = [GenRequest(prompt=PROMPTS[0], max_new_tokens=60, ignore_eos=True) for _ in range(8)]
    watches = [Watch() for _ in reqs]
    for req, w in zip(reqs, watches, strict=True):
        engine.submit(req, w)
    refused = [w for w in watches if w.events and w.events[-1].code == "queue_full"]
    assert len(refused) >= 2  # 4 slots + 2 waiting: the rest are refused when they arrive
    assert all(
        w.events[-1].finish_reason == "error" and "queue is full" in (w.events[-1].error or "")
        for w in refused
    )
    engine.cancel([r.id for r in reqs])
    for w in watches:
        w.wait(final=True)


def test_bad_requests_fail_alone(smol, tokenizer) -> None:
    engine, model = smol
    good = GenRequest(prompt=PROMPTS[0], max_new_tokens=6)
    too_long = GenRequest(prompt="word " * 2000, max_new_tokens=4)  # past the engine's 1024 positions
    huge_seed = GenRequest(prompt=PROMPTS[1], max_new_tokens=6, temperature=0.7, seed=2**70)
    results = engine.run([too_long, good, huge_seed])
    assert (
        results[0].finish_reason == "error" and results[0].code == "invalid" and "context" in results[0].error
    )
    assert results[1].text == reference(model, tokenizer, good)
    assert results[2].finish_reason == "length" and results[2].completion_tokens == 6


def test_seeded_sampling_does_not_depend_on_neighbours(smol) -> None:
    engine, _ = smol
    seeded = GenRequest(prompt=PROMPTS[2], max_new_tokens=20, temperature=0.9, top_p=0.95, seed=1234)
    [alone] = engine.run([seeded])
    crowd = [GenRequest(prompt=p, max_new_tokens=15, temperature=1.0) for p in PROMPTS[:3]]
    together = engine.run([*crowd, seeded.model_copy(update={"id": "again"})])
    assert together[-1].text == alone.text
    other = engine.run([seeded.model_copy(update={"id": "other", "seed": 99})])[0]
    assert other.text != alone.text


def test_a_tiny_top_p_is_greedy(smol, tokenizer) -> None:
    engine, model = smol
    req = GenRequest(prompt=PROMPTS[0], max_new_tokens=12, temperature=1.5, top_p=1e-6)
    assert engine.run([req])[0].text == reference(model, tokenizer, req)


def test_logprobs_are_the_models(smol, tokenizer) -> None:
    engine, model = smol
    req = GenRequest(prompt=PROMPTS[0], max_new_tokens=4, logprobs=3)
    [result] = engine.run([req])
    assert result.logprobs is not None and len(result.logprobs) == 4
    ids = tokenizer(req.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        want = model(ids).logits[0, -1].float().log_softmax(-1)
    first = result.logprobs[0]
    assert first.logprob == pytest.approx(float(want.max()), abs=1e-4)  # greedy: the best token
    assert len(first.top) == 3 and first.top[0][0] == first.token
    assert [lp for _, lp in first.top] == sorted((lp for _, lp in first.top), reverse=True)


def test_length_only_when_the_budget_is_reached(tokenizer) -> None:
    """issue 18.7: `length` arrived after 92, 49 or 1 of 250 tokens. Many concurrent rows, staggered
    arrivals, slot reuse: every one reports exactly its budget."""
    engine = Engine(
        LoadedModel.wrap(tiny("llama", len(tokenizer)), tokenizer), slots=4, context=512, prefill_chunk=16
    )
    reqs = [
        GenRequest(prompt=PROMPTS[i % 5] * (1 + i % 3), max_new_tokens=250, ignore_eos=True)
        for i in range(10)
    ]
    for result in engine.run(reqs, timeout=600):
        assert (result.finish_reason, result.completion_tokens) == ("length", 250)


def test_streamed_text_never_shows_a_stop_string_it_cuts(smol) -> None:
    engine, _ = smol
    req = GenRequest(prompt="Count: one, two, three,", max_new_tokens=30, stop=[" six"])
    watch = Watch()
    engine.submit(req, watch)
    watch.wait(final=True)
    text = "".join(e.text for e in watch.events)
    assert watch.events[-1].finish_reason == "stop" and "six" not in text
    assert all(" si" not in e.text or e is watch.events[-1] for e in watch.events)
    assert [e.completion_tokens for e in watch.events] == sorted(e.completion_tokens for e in watch.events)


def test_requests_sharing_an_id_are_all_served(smol, tokenizer) -> None:
    """Ids come from callers; two requests with the same one are still two requests."""
    engine, model = smol
    a = GenRequest(prompt=PROMPTS[0], max_new_tokens=5, id="same")
    b = GenRequest(prompt=PROMPTS[1], max_new_tokens=7, id="same")
    first, second = engine.run([a, b], timeout=120)
    assert first.text == reference(model, tokenizer, a) and second.text == reference(model, tokenizer, b)


def test_the_compiled_forward_gives_the_same_tokens(tokenizer, tmp_path) -> None:
    """ASKDB_LLM_COMPILE: torch.compile of the forward (one graph for decode, one for prefill, every
    size padded to 2 or more) changes no token; its kernels are saved for the next start."""
    model = tiny("llama", len(tokenizer))
    eager = Engine(LoadedModel.wrap(model, tokenizer), slots=3, context=256, prefill_chunk=8)
    compiled = Engine(LoadedModel.wrap(model, tokenizer), slots=3, context=256, prefill_chunk=8, compile=True)
    assert compiled.warm_up(256, str(tmp_path))["compiled"] == "yes"
    assert list(tmp_path.glob("askdb-*.bin"))  # the cache artifacts a restart loads
    reqs = [
        GenRequest(prompt=p, max_new_tokens=n, ignore_eos=True)
        for p, n in zip(PROMPTS, [9, 1, 14, 5, 3], strict=True)
    ]
    assert [r.text for r in compiled.run(reqs, timeout=900)] == [r.text for r in eager.run(reqs)]


def test_a_grammar_row_returns_its_text_as_one_result(smol) -> None:
    """A row whose grammar completes ends on the host; a whole-result consumer still gets the text."""
    engine, _ = smol
    req = GenRequest(
        prompt="Is Paris in France? Answer yes or no:", max_new_tokens=4, grammar='start: " yes" | " no"'
    )
    [result] = engine.run([req])
    assert result.text in (" yes", " no") and result.finish_reason == "stop"


def test_overlapped_host_work_changes_no_result(smol) -> None:
    """The GPU default: a step's tokens are settled on the host while the next step runs, so a row
    that ends (EOS, stop string, budget) is known one step late. Results are the same as settling at
    once: more requests than slots, budgets of 1, stops, EOS, a grammar row (settled at once)."""
    lm = smol[0].lm
    engine = Engine(lm, slots=4, context=1024, prefill_chunk=8, overlap=False)
    overlapped = Engine(lm, slots=4, context=1024, prefill_chunk=8, overlap=True)
    try:
        reqs = [
            GenRequest(prompt=PROMPTS[i % 5], max_new_tokens=[1, 7, 30, 2, 16][i % 5], stop=stop)
            for i, stop in enumerate([[], [], [","], [], [" the"], [], ["\n"], [], [], []])
        ]
        reqs.append(
            GenRequest(
                prompt="Is Paris in France? Answer yes or no:",
                max_new_tokens=4,
                grammar='start: " yes" | " no"',
            )
        )
        want = [(r.text, r.finish_reason, r.completion_tokens) for r in engine.run(reqs, timeout=300)]
        got = [(r.text, r.finish_reason, r.completion_tokens) for r in overlapped.run(reqs, timeout=300)]
        assert got == want
        assert {reason for _, reason, _ in want} == {"stop", "length"}
        assert all(row is None for row in overlapped.rows)
    finally:
        overlapped.close()
        engine.close()


def test_a_stream_that_falls_behind_gets_what_queued_as_one_piece(smol, tokenizer) -> None:
    """A consumer busy elsewhere (a server loop under many streams) takes every queued event as one:
    same text, far fewer writes."""
    engine, model = smol
    req = GenRequest(prompt=PROMPTS[2], max_new_tokens=12, ignore_eos=True)

    async def consume() -> tuple[StreamEvent, list[StreamEvent]]:
        events = engine.stream(req)
        first = await anext(events)
        while req.id in engine._known:  # the consumer looks away until the engine is done with it
            await asyncio.sleep(0.01)
        return first, [e async for e in events]

    first, rest = asyncio.run(consume())
    assert len(rest) <= 2 and rest[-1].finish_reason == "length"  # not one per token
    assert first.text + "".join(e.text for e in rest) == reference(model, tokenizer, req)
    assert rest[-1].completion_tokens == 12
