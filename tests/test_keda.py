"""deploy/k8s/keda: the KEDA example renders; its Kubernetes objects validate as the overlays' do
(kubernetes-validate, strict), and the ScaledObject, a CRD kubernetes-validate has no schema for,
validates against KEDA's own API types (cloudcoil's generated models of KEDA's CRDs), strictly:
every field must be one KEDA defines. Its trigger reads a metric askdb really exports."""

from __future__ import annotations

import typing
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from pydantic import BaseModel

from deploy.k8s.render import K8S, render

KEDA = K8S / "keda"


def _models(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models inside a field's type (Optional, list, Annotated...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def unknown_fields(model: type[BaseModel], value: Any, path: str = "") -> list[str]:
    """Keys of `value` that `model` (KEDA's type) does not define, recursively."""
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in unknown_fields(model, v, f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    out = []
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            if model.model_config.get("extra") != "allow" and fields:  # a free-form map has no fields
                out.append(f"{path}.{key}")
            continue
        for sub in _models(field.annotation):
            out += unknown_fields(sub, item, f"{path}.{key}")
    return out


@pytest.fixture(scope="module")
def objs() -> list[dict]:
    return render(KEDA)


def test_keda_example_validates(objs: list[dict]) -> None:
    version = kubernetes_validate.latest_version()
    [scaled] = [o for o in objs if o["kind"] == "ScaledObject"]
    for obj in objs:
        if obj is not scaled:
            kubernetes_validate.validate(obj, version, strict=True)
    ScaledObject.model_validate(scaled)  # types and required fields
    assert unknown_fields(ScaledObject, scaled) == []


def test_the_strict_check_catches_a_misspelt_field(objs: list[dict]) -> None:
    [scaled] = [o for o in objs if o["kind"] == "ScaledObject"]
    bad = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 4}}  # KEDA's is maxReplicaCount
    assert unknown_fields(ScaledObject, bad) == [".spec.maxReplicas"]


def test_keda_owns_the_llm_runners_scaling_on_requests_waiting(objs: list[dict]) -> None:
    [scaled] = [o for o in objs if o["kind"] == "ScaledObject"]
    hpas = {o["metadata"]["name"] for o in objs if o["kind"] == "HorizontalPodAutoscaler"}
    assert "askdb-llm" not in hpas and {"askdb-api", "askdb-embedding"} <= hpas  # one scaler each
    target = scaled["spec"]["scaleTargetRef"]["name"]
    assert target in {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"}
    assert scaled["metadata"]["namespace"] == "askdb"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and "vllm:num_requests_waiting" in trigger["metadata"]["query"]
