"""Load shapes for fair-share measurements (bench/fairness.py, tests/test_fairness.py): tenants that
keep N streams outstanding in a real engine, a light tenant's latency, Jain's fairness index."""

from __future__ import annotations

import random
import threading
import time
from types import TracebackType

import bentoml
import torch
import transformers

from models.defaults import DEFAULT_LLM_TAG
from runners.engine import Engine
from runners.model import LoadedModel
from runners.schemas import GenRequest, StreamEvent
from runners.tenancy import Tenant

PROMPT = "SELECT name FROM Track WHERE"


def tiny_llama(layers: int = 3) -> LoadedModel:
    """A randomly initialised small Llama with the served tokenizer: steps of a few ms on a CPU, so
    slots can be made scarce and many steps measured quickly."""
    tok = transformers.AutoTokenizer.from_pretrained(bentoml.models.get(DEFAULT_LLM_TAG).path)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return LoadedModel.wrap(model, tok)


def jain(xs: tuple[float, ...] | list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one gets everything."""
    total, squares = sum(xs), sum(x * x for x in xs)
    return total * total / (len(xs) * squares) if squares else 1.0


def request(tenant: Tenant, tokens: int) -> GenRequest:
    return GenRequest(prompt=PROMPT, max_new_tokens=tokens, ignore_eos=True, tenant=tenant)


def light_latencies(engine: Engine, tenant: Tenant, runs: int, tokens: int = 32) -> list[tuple[float, int]]:
    """(seconds, engine decode steps) for each of `runs` requests of `tokens` tokens, one after the
    other. Steps are what the scheduler decides; seconds also carry the machine's other load."""
    out = []
    for _ in range(runs):
        t0, s0 = time.perf_counter(), engine.steps_run
        [result] = engine.run([request(tenant, tokens)], timeout=300)
        assert result.completion_tokens == tokens, result
        out.append((time.perf_counter() - t0, engine.steps_run - s0))
    return out


class Backlog:
    """`streams` requests of `tenant` always outstanding (each finished one is replaced), with
    lengths drawn from `lengths` so rows do not finish in lockstep; counts tokens as they come."""

    def __init__(self, engine: Engine, tenant: Tenant, streams: int, lengths: tuple[int, int] = (24, 40)):
        self.engine, self.tenant, self.streams, self.lengths = engine, tenant, streams, lengths
        self.tokens = 0
        self.peak_rows = 0
        self._decoding = 0
        self._rng = random.Random(tenant.name)
        self._cond = threading.Condition()
        self._finished = 0
        self._stop = False
        self._thread = threading.Thread(target=self._drive, daemon=True)

    def _submit(self) -> None:
        seen = [0]

        def sink(event: StreamEvent) -> None:  # engine thread
            with self._cond:
                if seen[0] == 0 and event.completion_tokens:
                    self._decoding += 1
                    self.peak_rows = max(self.peak_rows, self._decoding)
                self.tokens += event.completion_tokens - seen[0]
                if event.finish_reason is not None and seen[0]:
                    self._decoding -= 1
                seen[0] = event.completion_tokens
                if event.finish_reason is not None:
                    self._finished += 1
                self._cond.notify_all()

        self.engine.submit(request(self.tenant, self._rng.randint(*self.lengths)), sink)

    def _drive(self) -> None:
        for _ in range(self.streams):
            self._submit()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._finished or self._stop)
                if self._stop:
                    return
                again, self._finished = self._finished, 0
            for _ in range(again):
                self._submit()

    def wait_tokens(self, n: int, timeout: float = 300) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.tokens >= n, timeout):
                raise TimeoutError(f"{self.tenant.name}: {self.tokens} of {n} tokens in {timeout} s")

    def wait_saturated(self) -> None:
        """Until its first rows are decoding (the queue has its backlog)."""
        self.wait_tokens(2 * self.streams)

    def __enter__(self) -> Backlog:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        self.engine.cancel([])  # wake the loop; outstanding rows are cancelled by the engine owner
