"""Every Karpenter NodeOverlay a plan exports validates against the upstream CRD (tests/fixtures/karpenter/
SOURCES.md), targets a NodePool the same plan exports, and advertises what that pool's nodes will: GPUs of the
instance type x k for a time-sliced pool, the instances of each MIG profile per node for a MIG spot pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from analysis import recommend
from analysis.instances import instance_types
from analysis.recommend.manifests import node_overlay
from analysis.recommend.model import Manifest
from analysis.recommend.plan import Plan
from tests.demo_fleet import Demo
from tests.test_recommend_plan import (
    small_serving_on_two_on_demand_h100_nodes,
    time_sliced_serving_on_two_on_demand_nodes,
)


@pytest.fixture(scope="module")
def overlay_schema(fixtures: Path) -> dict[str, Any]:
    """Karpenter's NodeOverlay v1alpha1 openAPIV3Schema."""
    crd = yaml.safe_load((fixtures / "karpenter" / "karpenter.sh_nodeoverlays.yaml").read_text())
    (v1alpha1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return dict(v1alpha1["schema"]["openAPIV3Schema"])


def _requirement(obj: dict[str, Any], key: str) -> list[str]:
    (values,) = [q["values"] for q in obj["spec"]["requirements"] if q["key"] == key and q["operator"] == "In"]
    return list(values)


def _pool_type(pool: dict[str, Any]) -> str:
    return _requirement(pool["spec"]["template"], "node.kubernetes.io/instance-type")[0]


def _expected(overlay: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, int]:
    """What the overlay's pool's nodes advertise, from the other objects of the change: the device plugin's
    time-slicing replicas x the instance type's GPUs, or the mig-parted config the pool's nodes are labelled with."""
    (pool_name,) = _requirement(overlay, "karpenter.sh/nodepool")
    (pool,) = [d for d in docs if d["kind"] == "NodePool" and d["metadata"]["name"] == pool_name]
    (itype,) = _requirement(overlay, "node.kubernetes.io/instance-type")
    assert itype == _pool_type(pool)
    gpus = instance_types()[itype].gpu_count
    labels = pool["spec"]["template"].get("metadata", {}).get("labels", {})
    if "nvidia.com/mig.config" in labels:
        config = labels["nvidia.com/mig.config"]
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]]
        layouts = [
            e["mig-devices"]
            for e in yaml.safe_load(cm["data"]["config.yaml"])["mig-configs"][config]
            if e["mig-enabled"]
            for _ in e["devices"]
        ]
        assert 0 < len(layouts) <= gpus
        counts: dict[str, int] = {}
        for layout in layouts:
            for profile, n in layout.items():
                counts[f"nvidia.com/mig-{profile}"] = counts.get(f"nvidia.com/mig-{profile}", 0) + n
        return counts
    config_name = labels["nvidia.com/device-plugin.config"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and config_name in d["data"]]
    (sliced,) = yaml.safe_load(cm["data"][config_name])["sharing"]["timeSlicing"]["resources"]
    return {"nvidia.com/gpu": gpus * sliced["replicas"]}


def _check(docs: list[dict[str, Any]], schema: dict[str, Any]) -> int:
    overlays = [d for d in docs if d["kind"] == "NodeOverlay"]
    for overlay in overlays:
        jsonschema.validate(overlay, schema)
        assert overlay["apiVersion"] == "karpenter.sh/v1alpha1"
        assert overlay["spec"]["capacity"] == _expected(overlay, docs)
    return len(overlays)


def _plan_docs(plan: Plan) -> list[list[dict[str, Any]]]:
    return [[m.obj for m in a.rec.manifests if not m.patch] for cp in plan.clusters for a in cp.applied]


def _pools_with_more_gpu_resources(docs: list[dict[str, Any]]) -> int:
    labels = [d["spec"]["template"].get("metadata", {}).get("labels", {}) for d in docs if d["kind"] == "NodePool"]
    return sum(1 for x in labels if "nvidia.com/mig.config" in x or "nvidia.com/device-plugin.config" in x)


def test_every_overlay_the_demo_writes_validates_and_matches_its_pool(
    demo: Demo,
    overlay_schema: dict[str, Any],
) -> None:
    found = 0
    for path in sorted(demo.out.glob("*/*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        pools = {d["metadata"]["name"] for d in docs if d["kind"] == "NodePool"}
        targets = {_requirement(d, "karpenter.sh/nodepool")[0] for d in docs if d["kind"] == "NodeOverlay"}
        assert targets <= pools, path
        assert len(targets) == _pools_with_more_gpu_resources(docs), path
        found += _check(docs, overlay_schema)
    assert found >= 1


def test_a_time_sliced_pool_comes_with_an_overlay_of_gpus_times_k(overlay_schema: dict[str, Any]) -> None:
    result = recommend.build(time_sliced_serving_on_two_on_demand_nodes().inputs())
    (sliced,) = result.of_kind("time-slicing")
    (overlay,) = [m for m in sliced.manifests if m.obj["kind"] == "NodeOverlay"]
    k = sliced.evidence["replicas_per_gpu"]
    assert overlay.obj["spec"]["capacity"] == {"nvidia.com/gpu": 4 * k}  # g6.12xlarge: 4 L4s
    assert "NodeOverlay feature gate" in " ".join(overlay.comments)
    plan = recommend.build_plan(result)
    assert sum(_check(docs, overlay_schema) for docs in _plan_docs(plan)) == 1  # also on spot, combined


def test_a_mig_spot_pool_comes_with_an_overlay_of_its_instances_per_node(overlay_schema: dict[str, Any]) -> None:
    result = recommend.build(small_serving_on_two_on_demand_h100_nodes().inputs())
    (mig_change,) = result.of_kind("mig")
    assert not [m for m in mig_change.manifests if m.obj["kind"] == "NodeOverlay"]  # no pool of its own to target
    plan = recommend.build_plan(result)
    (applied,) = [a.rec for cp in plan.clusters for a in cp.applied if a.rec.kind == "mig"]
    (overlay,) = [m.obj for m in applied.manifests if m.obj["kind"] == "NodeOverlay"]
    assert _requirement(overlay, "karpenter.sh/nodepool") == ["h100-serve-spot-mig"]
    layouts = mig_change.evidence["layouts"][: instance_types()["p5.48xlarge"].gpu_count]
    expected: dict[str, int] = {}
    for layout in layouts:
        for profile, n in layout["mig_devices"].items():
            expected[f"nvidia.com/mig-{profile}"] = expected.get(f"nvidia.com/mig-{profile}", 0) + n
    assert overlay["spec"]["capacity"] == expected and expected
    assert "nvidia.com/gpu" not in overlay["spec"]["capacity"]
    assert sum(_check(docs, overlay_schema) for docs in _plan_docs(plan)) == 1


def test_the_schema_rejects_a_malformed_overlay(overlay_schema: dict[str, Any]) -> None:
    good = node_overlay("p", nodepool="p", instance_type="g6.xlarge", capacity={"nvidia.com/gpu": 4})
    jsonschema.validate(good, overlay_schema)
    bad = {**good, "spec": {**good["spec"], "capacity": {"nvidia.com/gpu": "four"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, overlay_schema)
    with pytest.raises(jsonschema.ValidationError, match="'requirements' is a required property"):
        jsonschema.validate({**good, "spec": {"capacity": {"nvidia.com/gpu": 4}}}, overlay_schema)
    assert Manifest(good).apply_command() == "kubectl apply -f <this file>"
