"""The LLM engine's figures under the names vLLM exports, next to askdb's own `askdb_llm_*`.

KEDA scalers, llm-d's inference scheduler, Grafana dashboards made for vLLM and benchmark tools
that scrape `/metrics` read these names (vLLM's docs/design/metrics.md); they are the same
measurements as the askdb ones, taken at the same moments (observability/llm_meter.py), with
vLLM's label `model_name`. Only askdb's own engine reports them: a remote provider is not a vLLM.

Which name matches which askdb metric: observability/README.md.

Inter-token latency is observed once per generated token after the first, each at the request's
mean gap (the engine stamps the first and last token, not every one), so its count is tokens, as
vLLM's is; time per output token is one observation per request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from observability.metrics import PER_TOKEN, SECONDS

LABELS = ["model_name"]

running = Gauge(
    "vllm:num_requests_running", "Requests holding an engine slot", LABELS, multiprocess_mode="livesum"
)
waiting = Gauge(
    "vllm:num_requests_waiting", "Requests waiting for an engine slot", LABELS, multiprocess_mode="livesum"
)
kv_cache_usage = Gauge(
    "vllm:kv_cache_usage_perc",
    "Fraction of KV-cache positions in use (1 = 100%), per worker",
    LABELS,
    multiprocess_mode="liveall",  # one series per worker (its own cache), as vLLM's per engine
)
prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed", LABELS)
generation_tokens = Counter("vllm:generation_tokens", "Generation tokens processed", LABELS)
request_success = Counter(
    "vllm:request_success", "Finished requests by finish reason", [*LABELS, "finished_reason"]
)
time_to_first_token = Histogram(
    "vllm:time_to_first_token_seconds", "Time to first token", LABELS, buckets=SECONDS
)
time_per_output_token = Histogram(
    "vllm:time_per_output_token_seconds", "Mean time per output token, per request", LABELS, buckets=PER_TOKEN
)
inter_token_latency = Histogram(
    "vllm:inter_token_latency_seconds", "Time between two output tokens", LABELS, buckets=PER_TOKEN
)
e2e_latency = Histogram(
    "vllm:e2e_request_latency_seconds", "End-to-end request latency", LABELS, buckets=SECONDS
)
queue_time = Histogram(
    "vllm:request_queue_time_seconds", "Time spent waiting for a slot", LABELS, buckets=SECONDS
)
# vLLM's finished_reason values: stop, length, abort (a client that left)
REASONS = {"stop": "stop", "length": "length", "cancelled": "abort", "error": "error"}
