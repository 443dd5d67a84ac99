"""Every `ASKDB_*` setting in one table: its type, its default and one line of why.

Style of vLLM's `envs.py`: no served module reads an `ASKDB_*` variable itself (tests/test_settings.py
checks; the load-test client's knobs, bench/locustfile.py, are its own). A process reads its
environment once, at first use (`get()`); each BentoML service (API, LLM runner, embedding runner)
is its own process, so each reads the environment it was started with. Modules keep their
historical constants (`runners.config.LLM_SLOTS`, `api.limits.MAX_CONCURRENCY`) as thin views of
this table. `load(env)` reads afresh, from `env` or the environment: the factories that tests call
after changing it (`KeyRing.from_env`, `AccessPolicy.from_env`, `databases.configured`, the quality
log, audit trail and example store, `runners.device.pick`) use it; in a server each runs once per
process too.

`askdb config` prints every setting with its value, default and source; `askdb config --readme`
rewrites the README's configuration table from this one (tests/test_settings.py keeps them equal).

A default of `None` is decided at start-up from the machine (GPU or not): `shown` says how.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.defaults import DEFAULT_EMBED_TAG, DEFAULT_LLM_TAG

PREFIX = "ASKDB_"
ROOT = Path(__file__).resolve().parent


def setting(default: Any, why: str, *, area: str, shown: str | None = None, secret: bool = False) -> Any:
    """One row of the table: `shown` is the default as documented (when it depends on the machine
    or a path); `secret` settings are never printed, only whether they are set."""
    extra = {"area": area, "shown": shown, "secret": secret}
    return Field(default, description=why, json_schema_extra=extra)


class Settings(BaseModel):
    """Field `llm_slots` is the variable `ASKDB_LLM_SLOTS`; unknown `ASKDB_*` names are ignored."""

    model_config = ConfigDict(
        alias_generator=lambda name: PREFIX + name.upper(), populate_by_name=True, extra="ignore", frozen=True
    )

    # ---- models and devices (runners/) ----
    llm_model: str = setting(DEFAULT_LLM_TAG, "store tag the LLM runner serves", area="runners")
    embed_model: str = setting(DEFAULT_EMBED_TAG, "store tag the embedding runner serves", area="runners")
    device: str = setting(
        "auto", "`auto`, `cpu`, `cuda` or `cuda:N`; auto: one GPU per runner worker, else CPU", area="runners"
    )
    llm_device: str = setting("", "the LLM runner's device, over `ASKDB_DEVICE`", area="runners")
    embed_device: str = setting(
        "", "the embedding runner's device (e.g. `cuda:1`), over `ASKDB_DEVICE`", area="runners"
    )
    dtype: str = setting(
        "",
        "`float32`, `bfloat16`, `float16`; unset: bf16 on GPU (decode is memory-bound), float32 on CPU",
        area="runners",
        shown="auto",
    )
    llm_dtype: str = setting("", "the LLM runner's dtype, over `ASKDB_DTYPE`", area="runners")
    embed_dtype: str = setting(
        "", "the encoder's dtype, over `ASKDB_DTYPE` (auto: bf16 on CPUs with native bf16)", area="runners"
    )
    # ---- the LLM engine (runners/engine.py; measured in docs/performance.md) ----
    llm_slots: int | None = setting(
        None, "rows decoded together; on a GPU a step costs about the same for 1 row as for 128",
        area="engine", shown="16 (GPU: 128)",
    )  # fmt: skip
    llm_max_context: int | None = setting(
        None, "positions per slot (capped by the model's); a GPU allocates slots x context up front",
        area="engine", shown="8192 (GPU: 4096)",
    )  # fmt: skip
    llm_prefill_chunk: int | None = setting(
        None, "prompt tokens prefilled between two decode steps: the most a long prompt stalls others",
        area="engine", shown="256 (GPU: 2048)",
    )  # fmt: skip
    llm_max_waiting: int = setting(
        512, "requests waiting for a slot; past it the runner answers 503", area="engine"
    )
    llm_graphs: bool = setting(True, "CUDA graphs for decode and prefill (no effect on a CPU)", area="engine")
    llm_compile: bool = setting(
        False,
        "torch.compile under the graphs; off: 208 s to compile, 59% slower at 64 rows (H200)",
        area="engine",
    )
    llm_compile_cache: str = setting(
        "~/.cache/askdb/compile", "compiled kernels kept across restarts; empty: none kept", area="engine"
    )
    llm_overlap: Literal["auto", "on", "off"] = setting(
        "auto", "host work of a step while the device runs the next; auto: on a GPU", area="engine"
    )
    llm_warm_context: int = setting(1024, "key lengths whose graphs are captured before ready", area="engine")
    llm_timeout_s: int = setting(
        600, "runner call timeout: BentoML's 60 s cuts off long generations", area="engine"
    )
    # ---- runner placement and the embedder ----
    embed_gpus: int = setting(
        0, "GPUs for the embedding runner; 0: it shares cuda:0 (a small encoder)", area="runners"
    )
    llm_gpus: int | None = setting(
        None,
        "GPUs the LLM runner asks BentoML for",
        area="runners",
        shown="visible GPUs - ASKDB_EMBED_GPUS (>= 1)",
    )
    llm_workers: int | None = setting(
        None, "LLM runner workers, one per GPU (replicas)", area="runners", shown="1 (GPU: ASKDB_LLM_GPUS)"
    )
    runner_workers: int = setting(
        1, "embedding runner workers (the LLM runner's: ASKDB_LLM_WORKERS)", area="runners"
    )
    embed_max_batch_size: int = setting(
        64, "texts per embedding batch (runners/batch_queue.py); 1: each call alone", area="runners"
    )
    embed_max_latency_ms: int = setting(
        10_000, "embedding batching latency cap (calls take ms)", area="runners"
    )
    embed_timeout_s: int = setting(60, "embedding runner call timeout", area="runners")
    runner_probe_timeout_s: float = setting(
        2.0, "runner health probe for /metrics' askdb_runner_up, under a scrape timeout", area="runners"
    )
    # ---- request limits (api/) ----
    max_prompt_chars: int = setting(
        32_000, "longest prompt /generate and /v1 accept (400 past it)", area="api"
    )
    max_new_tokens: int = setting(2048, "most tokens one request may ask for", area="api")
    max_embed_texts: int = setting(256, "texts per /embed or /v1/embeddings request", area="api")
    max_embed_text_chars: int = setting(8_000, "characters per embedded text", area="api")
    max_concurrency: int = setting(
        64, "requests in flight per service process; past it 429 at once instead of queuing", area="api"
    )
    request_timeout_s: int = setting(
        600, "API service timeout: covers a full LLM batch plus queueing", area="api"
    )
    header_timeout_s: float = setting(
        10.0, "request line and headers must arrive within this (408)", area="api"
    )
    max_header_bytes: int = setting(16 * 1024, "request line and headers larger than this: 431", area="api")
    max_body_bytes: int = setting(4 * 1024 * 1024, "request bodies larger than this: 413", area="api")
    body_timeout_s: float = setting(30.0, "the body must arrive within this (408)", area="api")
    # ---- keys and per-key limits (api/auth.py, docs/security.md) ----
    api_keys: str = setting(
        "",
        "comma-separated keys or a JSON list of key specs; unset (and no file): open",
        area="auth",
        secret=True,
    )
    api_key_file: str = setting("", "YAML/JSON file of key specs (databases, limits, policies)", area="auth")
    auth_metrics: bool = setting(
        False, "require a key for /metrics too (Prometheus scrapes without)", area="auth"
    )
    rate_requests_per_min: int = setting(
        0, "requests per minute per key that sets none; 0: unlimited", area="auth"
    )
    rate_tokens_per_min: int = setting(
        0, "tokens per minute per key that sets none; 0: unlimited", area="auth"
    )
    max_concurrent_per_key: int = setting(
        0, "requests in flight per key that sets none; 0: the service's cap", area="auth"
    )
    # rate-limit buckets in Redis (api/shared_limits.py): a key's limits hold across workers and replicas
    redis_url: str = setting(
        "",
        "Redis/Valkey URL for the rate limits (request window, token bucket); unset: per process",
        area="auth",
        secret=True,
    )
    redis_failure: Literal["open", "closed"] = setting(
        "open",
        "Redis down: `open` = per-process buckets meanwhile, `closed` = 503, Retry-After",
        area="auth",
    )
    redis_timeout_s: float = setting(
        0.25, "the longest a rate-limit check waits for Redis (a dead limiter must not hang requests)",
        area="auth",
    )  # fmt: skip
    # deploy.local (deploy/README.md): how long a retiring replica may finish its open streams
    drain_timeout_s: float = setting(
        620.0, "deploy.local: a retiring replica's time to finish open requests and streams",
        area="api",
    )  # fmt: skip
    # ---- /ask and its databases (pipeline/) ----
    databases: str = setting(
        "",
        "JSON/YAML mapping `name: URL` (`${VAR}` expanded); chinook is always there",
        area="ask",
        secret=True,
    )
    databases_file: str = setting("", "YAML file with the same mapping", area="ask")
    data_dir: str = setting("", "where chinook.sqlite and the example store live", area="ask", shown="data/")
    db_connect_timeout_s: int = setting(
        10, "database connect timeout: a dead host is a quick 503", area="ask"
    )
    query_timeout_s: float = setting(10.0, "per-query time limit (a request may ask for less)", area="ask")
    max_question_chars: int = setting(1000, "longest /ask question", area="ask")
    max_rows: int = setting(1000, "most rows /ask returns", area="ask")
    ask_examples: int = setting(3, "few-shot examples per question (options.examples)", area="ask")
    ask_max_attempts: int = setting(
        3, "generation rounds, repairs included (options.max_attempts)", area="ask"
    )
    ask_candidates: int = setting(1, "self-consistency candidates (options.candidates)", area="ask")
    ask_skeleton: float = setting(0.7, "weight of question-shape similarity in example retrieval", area="ask")
    ask_grammar: bool = setting(
        False, "constrain SQL decoding to the schema's grammar (local runner)", area="ask"
    )
    select_min_tables: int = setting(8, "schemas this small are shown whole, not selected", area="ask")
    select_top_k: int = setting(3, "tables picked by similarity, then joined by foreign keys", area="ask")
    examples_dir: str = setting("", "the few-shot example bank", area="ask", shown="eval/bank")
    example_store: str = setting(
        "", "proposed and approved examples", area="ask", shown="ASKDB_DATA_DIR/examples"
    )
    # ---- providers (providers/README.md) ----
    providers: str = setting(
        "", "YAML/JSON: external OpenAI-compatible providers and routes", area="providers", secret=True
    )
    providers_file: str = setting("", "YAML file with the same", area="providers")
    # ---- logs and tracing (observability/) ----
    quality_log: bool = setting(True, "one JSON line per /ask for offline evaluation; off: none", area="logs")
    quality_log_dir: str = setting("logs/quality", "quality log directory (a file per process)", area="logs")
    quality_log_max_bytes: int = setting(10_000_000, "quality log rotation size", area="logs")
    quality_log_backups: int = setting(10, "rotated quality log files kept", area="logs")
    audit_log: str = setting(
        "logs/audit/audit.jsonl", "the hash-chained audit trail's live file; `off` disables it", area="logs"
    )
    audit_max_bytes: int = setting(100_000_000, "rotate the audit file past this size; 0: never", area="logs")
    otlp_endpoint: str = setting(
        "", "OTLP/HTTP collector; read by BentoML from observability/tracing.yaml", area="logs"
    )

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # `ASKDB_LLM_SLOTS=` in a shell or manifest means "not set"; empty text stays empty text.
        if not isinstance(data, dict):
            return data
        texts = {f.alias for n, f in cls.model_fields.items() if f.annotation is str}
        return {
            k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip() and k not in texts)
        }

    # ---- derived paths ----
    def data_path(self) -> Path:
        return Path(self.data_dir) if self.data_dir else ROOT / "data"

    def examples_path(self) -> Path:
        return Path(self.examples_dir) if self.examples_dir else ROOT / "eval" / "bank"

    def example_store_path(self) -> Path:
        return Path(self.example_store) if self.example_store else self.data_path() / "examples"

    def audit_enabled(self) -> bool:
        return self.audit_log.strip().lower() not in ("off", "0", "false", "no", "")


def variable(name: str) -> str:
    return PREFIX + name.upper()


def load(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of `env` (default: this process's environment), read now."""
    env = os.environ if env is None else env
    return Settings.model_validate({k: v for k, v in env.items() if k.startswith(PREFIX)})


@functools.cache
def get() -> Settings:
    """This process's settings, read from its environment the first time."""
    return load()


# ---- the table, printed (`askdb config`) and in the README ----------------------------------------
README = ROOT / "README.md"
BEGIN, END = "<!-- settings:begin (askdb config --readme) -->", "<!-- settings:end -->"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "unset" if value is None or value == "" else str(value)


def rows(current: Settings | None = None, env: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """One dict per setting: variable, area, value, default, source (`env` or `default`), why."""
    current = current or get()
    env = os.environ if env is None else env
    out = []
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        value = getattr(current, name)
        if extra["secret"] and value:
            value = f"<set, {len(str(value))} characters>"
        out.append(
            {
                "variable": variable(name),
                "area": str(extra["area"]),
                "value": _text(value),
                "default": str(extra["shown"] or _text(field.default)),
                "source": "env" if variable(name) in env else "default",
                "why": field.description or "",
            }
        )
    return out


def markdown() -> str:
    """The README's table: defaults and reasons only (never this machine's values)."""
    lines = ["| variable | default | area | why |", "|---|---|---|---|"]
    for r in rows(Settings()):
        default = r["default"] if r["default"] == "unset" else f"`{r['default']}`"
        lines.append(f"| `{r['variable']}` | {default} | {r['area']} | {r['why']} |")
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """What stands between the README's markers."""
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def write_readme(path: Path = README) -> bool:
    """Regenerate the README's table; True when it changed."""
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n" + markdown() + "\n" + text[end:]
    path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="askdb config", description="every ASKDB_* setting: value, default, source"
    )
    p.add_argument("--readme", action="store_true", help="rewrite README.md's configuration table")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    args = p.parse_args(argv)
    if args.readme:
        print("README.md " + ("updated" if write_readme() else "already up to date"))
        return 0
    if args.markdown:
        print(markdown())
        return 0
    table = rows()
    widths = {k: max(len(k), *(len(r[k]) for r in table)) for k in ("variable", "value", "default", "source")}
    cols = ("variable", "value", "default", "source")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in table:
        print("  ".join(r[c].ljust(widths[c]) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
