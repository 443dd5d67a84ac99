"""Read Prometheus text from a live /metrics with prometheus_client's own parser."""

from __future__ import annotations

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Work still running in any process of a server: BentoML's per-endpoint gauge (API service and
# runners, queued batch rows included) and askdb's own count of generations under way.
BUSY = ("bentoml_service_request_in_progress", "askdb_llm_inflight_generations")


def _sums(url: str, names: tuple[str, ...], **labels: str) -> float:
    """Sum of every sample named in `names` whose labels include `labels`, from one scrape."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in names and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def sample_sum(url: str, metric: str, sample: str, **labels: str) -> float:
    """Sum of `sample` (e.g. 'x_count') over series of `metric` whose labels include `labels`."""
    assert sample.startswith(metric), (metric, sample)  # a family's samples carry its name
    return _sums(url, (sample,), **labels)


def wait_idle(url: str, timeout: float = 600.0) -> None:
    """Poll /metrics until no request is in progress anywhere in the server.

    Counter deltas are exact only if nothing else runs in the window: a request an earlier test
    abandoned (a client timeout, a stopped load generator) goes on generating, and is counted when
    it finishes. The default wait is the LLM runner's own timeout, past which such work is cut off.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy = _sums(url, BUSY)
        if busy == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} still had {busy:g} requests in progress after {timeout:.0f} s")
        time.sleep(0.2)
