"""The shipped monitoring config against a real Prometheus scraping a real askdb.

promtool validates the config and the rules and runs the alert unit tests (rules_test.yml); then
Debian's prometheus scrapes the session server with the shipped config (target and interval
rewritten), and the dashboard's PromQL answers with real values after real traffic.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import bentoml
import pytest

from tests.prom import MONITORING, PROMTOOL, Prometheus, scrape_config
from tests.servers import BentoServer

GEN = 'endpoint="/generate", service_name="askdb"'
QPS = f"sum(rate(bentoml_service_request_total{{{GEN}}}[30s]))"
DURATION = f"bentoml_service_request_duration_seconds_bucket{{{GEN}}}"
P95 = f"histogram_quantile(0.95, sum by (le) (rate({DURATION}[30s])))"
TOKENS_PER_S = "sum(rate(askdb_llm_generation_tokens_total[30s]))"
TTFT_P95 = "histogram_quantile(0.95, sum by (le) (rate(askdb_llm_time_to_first_token_seconds_bucket[30s])))"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yml"),
        ("test", "rules", "rules_test.yml"),
    ],
)
def test_promtool_accepts_shipped_files(args: tuple[str, ...]) -> None:
    done = promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_rejects_a_broken_rule(tmp_path) -> None:
    """The check above can fail: a rule with bad PromQL is refused."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: sum(rate(up[5m])\n")
    done = promtool("check", "rules", str(bad))
    assert done.returncode != 0


def _generate(client: bentoml.SyncHTTPClient, n: int) -> int:
    """n concurrent short generations; returns the tokens they generated."""
    with ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(lambda i: client.generate(prompt=f"Count to {i}:", max_new_tokens=4), range(n)))
    return sum(o["usage"]["completion_tokens"] for o in outs)


def test_real_prometheus_scrapes_askdb(askdb: BentoServer, client: bentoml.SyncHTTPClient) -> None:
    target = urlparse(askdb.url).netloc
    with Prometheus(scrape_config(target)) as prom:
        prom.wait(lambda: [t["health"] for t in prom.targets()] == ["up"], 60, "scraping askdb")
        [up] = prom.targets()
        assert up["labels"]["instance"] == target and up["labels"]["deployment"] == "askdb"

        # two waves a scrape apart, so rate() sees counters and buckets move inside its window
        _generate(client, 2)
        prom.wait(lambda: prom.values("askdb_llm_generation_tokens_total"), 30, "seeing tokens")
        before = sum(prom.values("askdb_llm_generation_tokens_total"))
        tokens = _generate(client, 3)
        prom.wait(
            lambda: sum(prom.values("askdb_llm_generation_tokens_total")) >= before + tokens, 30, "caught up"
        )

        assert prom.positive(QPS)
        assert prom.positive(P95)
        assert prom.positive(TOKENS_PER_S)
        assert prom.positive(TTFT_P95)
        assert sorted(prom.values("askdb_runner_up")) == [1.0, 1.0]
        # recording rules evaluated by this Prometheus from the shipped rules.yml
        prom.wait(lambda: prom.positive("askdb:llm_generation_tokens:rate1m"), 30, "recording tokens/s")
        assert prom.values('ALERTS{alertname="AskdbRunnerDown"}') == []

        # every panel of the Grafana dashboard is valid PromQL for this Prometheus
        dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        assert len(exprs) >= 10
        for expr in exprs:
            answer = prom.query(expr)
            assert answer["status"] == "success", (expr, answer.get("error"))
