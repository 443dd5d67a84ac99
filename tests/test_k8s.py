"""deploy/k8s: every overlay renders with kustomize, validates offline against a current Kubernetes
schema (kubernetes-validate), passes the policy checks, and its wiring works with real BentoML."""

from __future__ import annotations

import json
import re

import httpx
import kubernetes_validate
import pytest
import yaml

from deploy.capacity.plan import plan, served_rows
from deploy.k8s.render import K8S, OVERLAYS, render
from tests.servers import BentoServer

K8S_VERSION = kubernetes_validate.latest_version()
TARGETS = {
    "base": K8S / "base",
    **{o: K8S / "overlays" / o for o in OVERLAYS},
    "prometheus-adapter": K8S / "prometheus-adapter",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(path) for name, path in TARGETS.items()}


def of_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def config_of(objs: list[dict]) -> dict[str, str]:
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("askdb-config")]
    return cm["data"]


@pytest.mark.parametrize("name", list(TARGETS))
def test_renders_and_validates_offline(rendered: dict, name: str) -> None:
    objs = rendered[name]
    assert objs
    for obj in objs:
        # strict: unknown fields are errors too, not just wrong types.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_example_secret_validates() -> None:
    secret = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)


def test_validation_catches_a_broken_object() -> None:
    """The validator really checks: a misspelt field fails."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replica": 1, "selector": {}, "template": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy(rendered: dict, overlay: str) -> None:
    objs = rendered[overlay]
    deployments = of_kind(objs, "Deployment")
    assert set(deployments) == {"askdb-api", "askdb-llm", "askdb-embedding"}
    timeout = int(config_of(objs)["ASKDB_REQUEST_TIMEOUT_S"])
    for name, dep in deployments.items():
        spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        image, _, tag = c["image"].rpartition(":")
        assert image and tag and tag != "latest" and "/" not in tag, c["image"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        drain = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > drain + timeout, name
        refs = {e.get("configMapRef", e.get("secretRef"))["name"] for e in c["envFrom"]}
        assert "askdb-secrets" in refs and any(r.startswith("askdb-config-") for r in refs)
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert set(of_kind(objs, kind)) == set(deployments), kind
    for name, pdb in of_kind(objs, "PodDisruptionBudget").items():
        assert pdb["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]
    for name, hpa in of_kind(objs, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
        assert metrics["Pods"]["pods"]["metric"]["name"] == "askdb_in_flight_requests"
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_gpu_only_where_it_belongs(rendered: dict) -> None:
    for overlay in OVERLAYS:
        deps = of_kind(rendered[overlay], "Deployment")
        gpus = {
            n: d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
            for n, d in deps.items()
        }
        want = {"askdb-llm": "1"} if overlay != "cpu" else {}
        assert {n: g for n, g in gpus.items() if g} == want, overlay
        if overlay != "cpu":
            tolerations = deps["askdb-llm"]["spec"]["template"]["spec"]["tolerations"]
            assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_spot_prefers_spot_and_falls_back(rendered: dict) -> None:
    objs = rendered["spot"]
    for dep in of_kind(objs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        affinity = pod["affinity"]["nodeAffinity"]
        # Preferred only: with no spot capacity the scheduler falls back to on-demand nodes.
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in affinity
        keys = {
            e["key"]
            for t in affinity["preferredDuringSchedulingIgnoredDuringExecution"]
            for e in t["preference"]["matchExpressions"]
        }
        assert "karpenter.sh/capacity-type" in keys
        # The drain must finish inside the 2-minute reclaim notice.
        assert pod["terminationGracePeriodSeconds"] <= 120
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"kubernetes.io/hostname"}
    for hpa in of_kind(objs, "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["minReplicas"] >= 2, hpa["metadata"]["name"]  # one preemption leaves one


def test_api_depends_on_the_runner_services(rendered: dict) -> None:
    from runners.embedding import Embedding
    from runners.llm import LLM
    from service import AskDB

    objs = rendered["gpu"]
    services = of_kind(objs, "Service")
    args = {
        n: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for n, d in of_kind(objs, "Deployment").items()
    }
    assert f"--service-name={LLM.name}" in args["askdb-llm"]
    assert f"--service-name={Embedding.name}" in args["askdb-embedding"]
    assert f"--service-name={AskDB.name}" in args["askdb-api"]
    depends = dict(
        a.removeprefix("--depends=").split("=", 1) for a in args["askdb-api"] if a.startswith("--depends=")
    )
    assert set(depends) == {LLM.name, Embedding.name}
    for url in depends.values():
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url).groups()
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


def test_adapter_rule_matches_the_metric_bentoml_exports(rendered: dict, askdb: BentoServer) -> None:
    (cm,) = rendered["prometheus-adapter"]
    (rule,) = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    series = re.match(r"[a-z_]+", rule["seriesQuery"]).group(0)
    httpx.post(f"{askdb.url}/embed", json={"texts": ["x"]}, timeout=120)
    exported = httpx.get(f"{askdb.url}/metrics", timeout=30).text
    assert re.search(rf"^{series}\{{.*endpoint=\"/embed\"", exported, re.M), series
    assert rule["name"]["as"] == "askdb_in_flight_requests"


CAPACITY = json.loads((K8S.parent / "capacity" / "targets.json").read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_numbers_come_from_the_capacity_plan(rendered: dict, overlay: str) -> None:
    target = CAPACITY[overlay]
    bench = json.loads((K8S.parent.parent / target["bench"]).read_text())
    p = plan(
        served_rows(bench, variant=target["variant"]),
        target["qps"],
        target["p95_ms"],
        headroom=target["headroom"],
        spare=target["spare"],
    )
    hpa = of_kind(rendered[overlay], "HorizontalPodAutoscaler")["askdb-llm"]["spec"]
    pods = next(m for m in hpa["metrics"] if m["type"] == "Pods")["pods"]["target"]["averageValue"]
    assert (hpa["minReplicas"], hpa["maxReplicas"], int(pods)) == (
        p.replicas,
        p.max_replicas,
        p.in_flight_target,
    )


def _unknown_keys(data: object, hint: object, path: str = "") -> list[str]:
    """Keys BentoML's deployment schema does not define (its own converter ignores them silently)."""
    import typing

    import attr

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return [k for a in args if a is not type(None) for k in _unknown_keys(data, a, path)]
    if origin is dict and isinstance(data, dict):
        return [k for key, v in data.items() for k in _unknown_keys(v, args[1], f"{path}{key}.")]
    if origin is list and isinstance(data, list):
        return [k for i, v in enumerate(data) for k in _unknown_keys(v, args[0], f"{path}{i}.")]
    if isinstance(hint, type) and attr.has(hint) and isinstance(data, dict):
        fields = typing.get_type_hints(hint)
        out = [f"{path}{key}" for key in data if key not in fields]
        return out + [
            k
            for key, v in data.items()
            if key in fields
            for k in _unknown_keys(v, fields[key], f"{path}{key}.")
        ]
    return []


def test_bentocloud_config_parses_with_bentoml_schema(rendered: dict) -> None:
    from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
    from bentoml._internal.utils.cattr import bentoml_cattr

    from runners.embedding import Embedding
    from runners.llm import LLM
    from service import AskDB

    data = yaml.safe_load((K8S.parent / "bentocloud" / "deployment.yaml").read_text())
    config = bentoml_cattr.structure(data, CreateDeploymentSchema)
    assert _unknown_keys(data, CreateDeploymentSchema) == []
    assert set(config.services) == {AskDB.name, LLM.name, Embedding.name}
    # Per-service scaling targets: the same in-flight numbers as the Kubernetes gpu overlay.
    hpas = of_kind(rendered["gpu"], "HorizontalPodAutoscaler")
    for name, svc in config.services.items():
        spec = hpas["askdb-api" if name == "askdb" else name]["spec"]
        pods = next(m for m in spec["metrics"] if m["type"] == "Pods")["pods"]["target"]["averageValue"]
        assert svc.config_overrides["traffic"]["concurrency"] == int(pods), name
        assert (svc.scaling.min_replicas, svc.scaling.max_replicas) == (
            spec["minReplicas"],
            spec["maxReplicas"],
        ), name


def test_per_service_start_commands_serve_for_real(rendered: dict, tmp_path) -> None:
    """The pods' own args, run here: each runner alone, then the API with --depends at their URLs."""
    import os
    import subprocess
    import sys

    import bentoml

    from deploy.local.deployment import free_port
    from tests.servers import ROOT, wait_ready

    objs = rendered["cpu"]
    env = {**os.environ, **config_of(objs), "ASKDB_LLM_SLOTS": "4"}
    args = {
        n: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for n, d in of_kind(objs, "Deployment").items()
    }
    ports = {name: free_port() for name in args}
    procs: list[subprocess.Popen] = []

    def local(arg: str) -> str:
        # In the cluster the Services resolve these names; here they are loopback ports.
        for name, port in ports.items():
            arg = arg.replace(f"http://{name}:3000", f"http://127.0.0.1:{port}")
        return arg

    def start(name: str) -> str:
        argv = [local(a) for a in args[name] if not a.startswith("--port=")] + [f"--port={ports[name]}"]
        cmd = [sys.executable, "-m", "bentoml_cli._internal.start", *argv, "--host=127.0.0.1", str(ROOT)]
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
        return f"http://127.0.0.1:{ports[name]}"

    try:
        runners = [start("askdb-llm"), start("askdb-embedding")]
        for url, proc in zip(runners, procs, strict=True):
            wait_ready(url, proc, timeout=600)
        api = start("askdb-api")
        wait_ready(api, procs[-1], timeout=300)
        with bentoml.SyncHTTPClient(api, timeout=300) as client:
            out = client.generate(prompt="SELECT", max_new_tokens=2)
            emb = client.embed(texts=["albums"])
        # The API really called the separate runner processes: their access logs show the calls.
        logs = {n: (tmp_path / f"{n}.log").read_text(errors="replace") for n in args}
    finally:
        for proc in procs:
            proc.terminate()  # the arbiter stops its workers gracefully
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert out["usage"]["completion_tokens"] >= 1 and emb["dim"] > 0
    assert "path=/generate" in logs["askdb-llm"] and "path=/embed" in logs["askdb-embedding"]


def test_capacity_cli_arithmetic(tmp_path) -> None:
    import subprocess
    import sys

    rows = [
        {"concurrency": 1, "requests_per_s": 1.0, "p50_s": 0.4, "p95_s": 0.5},
        {"concurrency": 4, "requests_per_s": 3.0, "p50_s": 1.2, "p95_s": 1.5},
        {"concurrency": 8, "requests_per_s": 5.0, "p50_s": 2.5, "p95_s": 3.0},
    ]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"runs": [{"shape": "s", "variant": "v", "served": rows}]}))
    cli = [sys.executable, "-m", "deploy.capacity", str(bench)]
    out = subprocess.run([*cli, "--qps", "20", "--p95-ms", "2000", "--json"], capture_output=True, text=True)
    got = json.loads(out.stdout)
    # c=8 misses 2 s; c=4 fits: 3 x 0.7 = 2.1 req/s usable -> ceil(20 / 2.1) = 10, + 1 spare.
    assert got["point"]["concurrency"] == 4
    assert (got["replicas"], got["max_replicas"], got["in_flight_target"]) == (11, 21, 2)
    missed = subprocess.run([*cli, "--qps", "20", "--p95-ms", "100"], capture_output=True, text=True)
    assert missed.returncode == 2 and "lowest tail latency is 500 ms" in missed.stderr
