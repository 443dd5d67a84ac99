"""Batched generation with per-request parameters, on top of transformers' `generate`.

`generate` takes one configuration per batch; askdb batches requests from different users, so the
per-request parts (token budget, stop strings, EOS, temperature, top-p) are enforced row by row with
a StoppingCriteria and a LogitsProcessor that transformers calls at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria

from runners import config as settings
from runners import device as device_mod
from runners.constrain import Constraints, RowGrammar
from runners.schemas import GenRequest, GenResult


class RowStop(StoppingCriteria):
    """Marks each row done on its own EOS, token budget or stop string, and remembers why."""

    def __init__(self, prompt_width: int, reqs: list[GenRequest], eos_ids: set[int], tokenizer: Any):
        self.prompt_width = prompt_width
        self.budgets = [r.max_new_tokens for r in reqs]
        self.stops = [r.stop for r in reqs]
        self.ignore_eos = [r.ignore_eos for r in reqs]
        # stop strings are matched on a tail window wide enough to hold the longest one
        self.windows = [max((len(s) for s in r.stop), default=0) + 2 for r in reqs]
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer
        self.lengths: list[int | None] = [None] * len(reqs)
        self.reasons: list[str] = ["length"] * len(reqs)

    def _finish(self, row: int, length: int, reason: str) -> None:
        self.lengths[row], self.reasons[row] = length, reason

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_width
        last = input_ids[:, -1].tolist()
        for row, token in enumerate(last):
            if self.lengths[row] is not None:
                continue
            if token in self.eos_ids and not self.ignore_eos[row]:
                self._finish(row, generated - 1, "stop")
            elif self.stops[row] and self._hit_stop(input_ids[row], row, generated):
                self._finish(row, generated, "stop")
            elif generated >= self.budgets[row]:
                self._finish(row, generated, "length")
        done = [length is not None for length in self.lengths]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _hit_stop(self, ids: torch.Tensor, row: int, generated: int) -> bool:
        tail = ids[-min(generated, self.windows[row]) :]
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return any(s in text for s in self.stops[row])


class RowSampling(LogitsProcessor):
    """Greedy rows keep only their argmax; sampled rows get their own temperature and top-p."""

    def __init__(self, reqs: list[GenRequest]):
        self.temps = [r.temperature for r in reqs]
        self.top_ps = [r.top_p for r in reqs]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, float("-inf"))
        for row, (temp, top_p) in enumerate(zip(self.temps, self.top_ps, strict=True)):
            if temp == 0.0:
                best = scores[row].argmax()
                out[row, best] = 0.0
                continue
            logits = scores[row] / temp
            if top_p < 1.0:
                sorted_logits, order = logits.sort(descending=True)
                cum = sorted_logits.softmax(-1).cumsum(-1)
                drop = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
                logits = logits.scatter(0, order[drop], float("-inf"))
            out[row] = logits
        return out


@dataclass
class Generator:
    model: Any
    tokenizer: Any
    device: torch.device
    context_length: int
    constraints: Constraints | None = None  # built on the first request with a grammar

    @classmethod
    def load(cls, path: str | Path) -> Generator:
        device, dtype = device_mod.pick("llm")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the real last token
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        context = int(getattr(model.config, "max_position_embeddings", 2048))
        gen = cls(model, tokenizer, device, context)
        if settings.LLM_COMPILE and settings.LLM_CACHE == "static" and settings.LLM_WARMUP:
            gen.warmup()
        return gen

    def warmup(self) -> None:
        """Compile and capture every batch bucket now, so no request pays for it (bench/gpu)."""
        prompt = GenRequest(prompt=" hello" * 32, max_new_tokens=4, ignore_eos=True)
        size = 1
        while size <= settings.LLM_MAX_BATCH_SIZE:
            self.generate([prompt] * size)
            size *= 2

    def _static_shapes(self, reqs: list[GenRequest], ids: list[list[int]]) -> tuple[list, list, dict]:
        """Static KV cache: pad rows to a power-of-two bucket and prompts to a multiple of
        LLM_PAD_MULTIPLE, so compiled graphs and CUDA graphs are reused across batches."""
        if settings.LLM_CACHE != "static":
            return reqs, ids, {}
        bucket = 1 << (len(reqs) - 1).bit_length()
        reqs = reqs + [reqs[0]] * (bucket - len(reqs))  # dummy rows, dropped from the results
        ids = ids + [ids[0]] * (bucket - len(ids))
        step = settings.LLM_PAD_MULTIPLE
        need = -(-max(len(i) for i in ids) // step) * step + max(r.max_new_tokens for r in reqs)
        extra = {
            "cache_implementation": "static",
            "max_cache_len": -(-need // settings.LLM_CACHE_MULTIPLE) * settings.LLM_CACHE_MULTIPLE,
            "disable_compile": not settings.LLM_COMPILE,
        }
        if settings.LLM_COMPILE:
            extra["compile_config"] = transformers.CompileConfig(fullgraph=False, mode="reduce-overhead")
        return reqs, ids, extra

    @property
    def eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        return set(ids) if isinstance(ids, list) else {ids}

    def render(self, req: GenRequest) -> str:
        if req.messages is not None:
            msgs = [m.model_dump() for m in req.messages]
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return req.prompt or ""

    def _check(self, n_prompt: int, req: GenRequest) -> str | None:
        if n_prompt == 0:
            return "prompt is empty"
        if n_prompt + req.max_new_tokens > self.context_length:
            return (
                f"prompt has {n_prompt} tokens; with max_new_tokens={req.max_new_tokens} that exceeds "
                f"the model's context of {self.context_length} tokens"
            )
        if req.grammar is not None:
            return self.grammars.check(req.grammar)
        return None

    @property
    def grammars(self) -> Constraints:
        if self.constraints is None:
            self.constraints = Constraints(self.tokenizer, self.eos_ids)
        return self.constraints

    @torch.inference_mode()
    def generate(
        self, reqs: list[GenRequest], hooks: list[StoppingCriteria] | None = None
    ) -> list[GenResult]:
        """`hooks`: extra per-step callbacks (metrics), passed as criteria that never stop a row."""
        texts = [self.render(r) for r in reqs]
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        results: list[GenResult | None] = [None] * len(reqs)
        ok: list[int] = []
        for i, (req, toks) in enumerate(zip(reqs, ids, strict=True)):
            problem = self._check(len(toks), req)
            if problem:
                results[i] = GenResult(
                    text="",
                    finish_reason="error",
                    prompt_tokens=len(toks),
                    completion_tokens=0,
                    error=problem,
                )
            else:
                ok.append(i)
        if ok:
            done = self._run([reqs[i] for i in ok], [ids[i] for i in ok], hooks)
            for i, result in zip(ok, done, strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _run(
        self, reqs: list[GenRequest], ids: list[list[int]], hooks: list[StoppingCriteria] | None = None
    ) -> list[GenResult]:
        real = len(reqs)
        reqs, ids, cache_args = self._static_shapes(reqs, ids)
        multiple = settings.LLM_PAD_MULTIPLE if cache_args else None
        batch = self.tokenizer.pad(
            {"input_ids": ids}, padding=True, pad_to_multiple_of=multiple, return_tensors="pt"
        ).to(self.device)
        width = batch["input_ids"].shape[1]
        stop = RowStop(width, reqs, self.eos_ids, self.tokenizer)
        sample = any(r.temperature > 0 for r in reqs)
        seeds = [r.seed for r in reqs if r.seed is not None]
        if sample and seeds:
            torch.manual_seed(seeds[0])  # best effort, as OpenAI documents for `seed`
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in reqs),
            do_sample=sample,
            temperature=1.0,
            top_k=0 if sample else None,
            top_p=1.0,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=None,  # EOS is per row (RowStop), so ignore_eos can hold inside a batch
            **cache_args,
        )
        processors: list[LogitsProcessor] = []
        if any(r.grammar is not None for r in reqs):  # masks first: sampling sees only legal tokens
            matchers = [self.grammars.compile(r.grammar) if r.grammar else None for r in reqs]
            processors.append(RowGrammar(matchers, width))  # type: ignore[arg-type]
        if sample:
            processors.append(RowSampling(reqs))
        out = self.model.generate(
            **batch,
            generation_config=config,
            stopping_criteria=[stop, *(hooks or [])],
            logits_processor=processors or None,
        )
        results = []
        for row, req in enumerate(reqs[:real]):
            n = stop.lengths[row] if stop.lengths[row] is not None else out.shape[1] - width
            text = self.tokenizer.decode(out[row, width : width + n], skip_special_tokens=True)
            cut = [text.index(s) for s in req.stop if s in text]
            if cut:
                text = text[: min(cut)]
            results.append(
                GenResult(
                    text=text,
                    finish_reason=stop.reasons[row],  # type: ignore[arg-type]
                    prompt_tokens=len(ids[row]),
                    completion_tokens=n,
                )
            )
        return results
