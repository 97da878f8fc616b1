"""One plan per cluster (analysis.recommend.plan, files.render): on hand-made fleets (tests/recommend_inputs.py), no
workload gets two changes, spot + time-slicing become one time-sliced spot pool, MIG + spot become one spot pool
carrying the MIG config (and do not both apply when they cannot), every file names its cluster, and the headline is
the sum of the applied plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from analysis import mig, recommend
from analysis.recommend.files import render
from analysis.recommend.model import RecommendOptions
from analysis.recommend.plan import MIG_COMBINE_RULE, MIG_CONFIG_LABEL, Plan, folder_of, workloads_of
from tests.recommend_inputs import H100, L4, Fleet


def assert_consistent(plan: Plan) -> None:
    """No workload has two changes in a cluster's applied plan; the headline is the sum of what is applied; every
    file names its cluster."""
    for cp in plan.clusters:
        changes: dict[tuple[str, str], list[str]] = {}
        for a in cp.applied:
            for w in workloads_of(a.rec):
                changes.setdefault(w, []).append(a.rec.kind)
            selectors = [m for m in a.rec.manifests if m.patch and "nodeSelector" in json.dumps(m.obj)]
            assert len({(m.obj["metadata"]["namespace"], m.obj["metadata"]["name"]) for m in selectors}) == len(
                selectors
            )
        assert {w: k for w, k in changes.items() if len(k) > 1} == {}
        assert cp.savings_usd_month == pytest.approx(sum(a.savings_usd_month for a in cp.applied))
        if cp.nodes is not None:  # the headline is what the removed node-hours cost, pool by pool
            pools = cp.nodes.to_dict()["nodes"]
            loss = sum(a.banked.spot_loss_usd_month for a in cp.applied if a.banked is not None)
            assert cp.savings_usd_month == pytest.approx(
                sum(row["savings_usd_month"] for row in pools) - loss, abs=0.005 * len(pools) + 1e-6
            )
    assert plan.savings_usd_month == pytest.approx(sum(a.savings_usd_month for c in plan.clusters for a in c.applied))
    files = render(plan)
    top = json.loads(files["index.json"])
    assert top["savings_usd_month"] == round(plan.savings_usd_month, 2)
    assert [c["cluster"] for c in top["clusters"]] == [cp.cluster for cp in plan.clusters]
    for cp in plan.clusters:
        mine = {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith(cp.folder + "/")}
        assert set(mine) >= {"README.md", "index.json"}
        index = json.loads(mine["index.json"])
        assert index["cluster"] == cp.cluster
        rows = index["recommendations"]
        assert index["savings_usd_month"] == pytest.approx(
            sum(r["savings_usd_month"] for r in rows), abs=0.005 * len(rows) + 1e-9
        )  # the sum of the rows as shown, each rounded to cents
        assert mine["README.md"].startswith(f"# gpuledger plan for cluster {cp.cluster}\n")
        assert f"changes applied together: ${cp.savings_usd_month:,.2f} per month" in mine["README.md"]
        for name, text in mine.items():
            if name.endswith(".yaml"):
                assert text.startswith(f"# gpuledger plan for cluster {cp.cluster}: ")
                kind = name.removesuffix(".yaml")
                docs = [d for d in yaml.safe_load_all(text) if d is not None]
                assert docs and all(
                    d in [m.obj for a in cp.applied if a.rec.kind == kind for m in a.rec.manifests] for d in docs
                )


@pytest.fixture(scope="module")
def nodepool_schema(fixtures: Path) -> dict[str, Any]:
    """Karpenter's NodePool v1 openAPIV3Schema (tests/fixtures/karpenter/SOURCES.md)."""
    crd = yaml.safe_load((fixtures / "karpenter" / "karpenter.sh_nodepools.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(v1["schema"]["openAPIV3Schema"])


def time_sliced_serving_on_two_on_demand_nodes(max_replicas: int = 2, cpu_request: float | None = 5.0) -> Fleet:
    """Eight one-GPU pods on two g6.12xlarge. By default at k = 2, each requesting 5 vCPUs: the time-sliced pool
    stays on g6.12xlarge (one node takes 8 pods for 4.6016 USD/hour; four g6.4xlarge of 2 cost 5.2928), the spot
    pool's instance type."""
    f = Fleet(24, RecommendOptions(time_slicing_max_replicas=max_replicas))
    for node in ("n1", "n2"):
        f.node(node, "g6.12xlarge", "on-demand", L4, 4, "l4")
        for i in range(4):
            pod = ("search", f"autocomplete-5d9f8b6c5d-{node}x{i}", "app", "autocomplete")
            f.gpu(node, f"GPU-{node}-{i}", util=10.0, mem_gib=2.4, total_gib=24, pod=pod, cpu_request=cpu_request)
    return f


def small_serving_on_two_on_demand_h100_nodes() -> Fleet:
    f = Fleet(24)
    for node in ("n1", "n2"):
        f.node(node, "p5.48xlarge", "on-demand", H100, 8, "h100-serve")
        for i in range(2):
            pod = ("serve", f"embed-5d9f8b6c5d-{node}x{i}", "embed", "embed")
            f.gpu(node, f"GPU-{node}-{i}", util=5.0, mem_gib=8, total_gib=80, pod=pod)
    return f


def small_serving_beside_a_busy_one_on_two_h100_nodes() -> Fleet:
    """``small_serving_on_two_on_demand_h100_nodes`` and a busy replicated service on the same nodes: both are spot
    candidates, only the small one fits a MIG slice."""
    f = small_serving_on_two_on_demand_h100_nodes()
    for node in ("n1", "n2"):
        for i in range(2, 4):
            pod = ("serve", f"chat-7c8d9e6f5a-{node}x{i}", "chat", "chat")
            f.gpu(node, f"GPU-{node}-{i}", util=90.0, mem_gib=70, total_gib=80, pod=pod)
    return f


def idle_half_of_a_training_job() -> Fleet:
    f = Fleet(10)
    f.node("n1", "p5.48xlarge", "spot", H100, 8, "h100")
    for i in range(4):
        pod = ("team-a", "trainer-0", "pytorch", "trainer")
        f.gpu("n1", f"GPU-{i}", util=90.0 if i < 2 else 0.0, mem_gib=40 if i < 2 else 0.5, total_gib=80, pod=pod)
    return f


FLEETS: list[Callable[[], Fleet]] = [
    time_sliced_serving_on_two_on_demand_nodes,
    small_serving_on_two_on_demand_h100_nodes,
    small_serving_beside_a_busy_one_on_two_h100_nodes,
    idle_half_of_a_training_job,
]


@pytest.mark.parametrize("fleet", FLEETS, ids=lambda f: f.__name__)
def test_no_workload_has_two_changes_on_hand_made_fleets(fleet: Callable[[], Fleet]) -> None:
    result = recommend.build(fleet().inputs())
    assert result.items
    assert_consistent(recommend.build_plan(result))


def test_spot_and_time_slicing_become_one_time_sliced_spot_pool() -> None:
    result = recommend.build(time_sliced_serving_on_two_on_demand_nodes().inputs())
    (sliced,) = result.of_kind("time-slicing")
    (spot,) = result.of_kind("spot")
    assert workloads_of(sliced) == workloads_of(spot) == (("search", "autocomplete"),)  # both would move it
    (cp,) = recommend.build_plan(result).clusters
    (applied,) = cp.applied
    assert applied.rec.kind == "time-slicing" and cp.alternatives == ()
    k = sliced.evidence["replicas_per_gpu"]
    assert applied.rec.savings_usd_month == pytest.approx(sliced.savings_usd_month + spot.savings_usd_month / k)
    (pool,) = [m.obj for m in applied.rec.manifests if m.obj["kind"] == "NodePool"]
    capacity = [q for q in pool["spec"]["template"]["spec"]["requirements"] if q["key"] == "karpenter.sh/capacity-type"]
    assert capacity == [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]}]
    assert pool["metadata"]["name"] == "l4-timesliced"
    assert sliced.evidence["target_instance_type"] == spot.evidence["instance_type"] == "g6.12xlarge"
    assert cp.alone == {"time-slicing": sliced.savings_usd_month, "spot": spot.savings_usd_month}


def test_a_time_sliced_pool_of_another_instance_type_is_not_put_on_the_spot_pools_terms() -> None:
    """At k = 4 with no requests stored, the eight pods need two L4s: two g6.xlarge, not a g6.12xlarge. The spot
    change's risk and savings are the g6.12xlarge's, so the two do not combine: one is the other's alternative."""
    result = recommend.build(time_sliced_serving_on_two_on_demand_nodes(max_replicas=4, cpu_request=None).inputs())
    (sliced,) = result.of_kind("time-slicing")
    (spot,) = result.of_kind("spot")
    assert (sliced.evidence["target_instance_type"], spot.evidence["instance_type"]) == ("g6.xlarge", "g6.12xlarge")
    (cp,) = recommend.build_plan(result).clusters
    assert len(cp.applied) == 1 and [a.rec.kind for a in cp.alternatives] == [
        ({"time-slicing", "spot"} - {cp.applied[0].rec.kind}).pop()
    ]
    assert all("spot" not in a.rec.evidence for a in cp.applied)


def test_mig_and_spot_on_the_same_workloads_become_one_spot_pool_with_the_mig_config(
    nodepool_schema: dict[str, Any],
) -> None:
    result = recommend.build(small_serving_on_two_on_demand_h100_nodes().inputs())
    (mig_change,) = result.of_kind("mig")
    (spot,) = result.of_kind("spot")
    assert workloads_of(mig_change) == workloads_of(spot) == (("serve", "embed"),)
    (cp,) = recommend.build_plan(result).clusters
    assert cp.alternatives == ()
    (applied,) = [a for a in cp.applied if a.rec.kind in ("mig", "spot")]
    assert applied.rec.kind == "mig" and "combined with the spot change" in applied.note
    (pool,) = [m.obj for m in applied.rec.manifests if m.obj["kind"] == "NodePool"]
    jsonschema.validate(pool, nodepool_schema)
    assert pool["metadata"]["name"] == "h100-serve-spot-mig"
    config = mig_change.evidence["mig_config"]
    assert pool["spec"]["template"]["metadata"]["labels"] == {MIG_CONFIG_LABEL: config}
    requirements = {q["key"]: q["values"] for q in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == ["spot"]
    assert requirements["node.kubernetes.io/instance-type"] == [spot.evidence["instance_type"]] == ["p5.48xlarge"]
    (configmap,) = [m for m in applied.rec.manifests if m.obj["kind"] == "ConfigMap"]
    assert config in yaml.safe_load(configmap.obj["data"]["config.yaml"])["mig-configs"]
    (patch,) = [m for m in applied.rec.manifests if m.patch]  # one patch of the owner, not one per change
    (profile,) = [w["profile"] for w in mig_change.evidence["workloads"]]
    pod_spec = patch.obj["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"karpenter.sh/nodepool": "h100-serve-spot-mig"}
    (container,) = pod_spec["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": None, f"nvidia.com/mig-{profile}": 1}
    gpu = mig.load_catalog().gpu(mig_change.evidence["gpu_model"])
    share = gpu.profile(profile).slices / gpu.compute_slices
    assert share == pytest.approx(1 / 7)  # 1g.10gb: 1 of the H100's 7 compute slices
    (candidate,) = spot.evidence["candidates"]
    assert applied.rec.savings_usd_month == pytest.approx(
        mig_change.savings_usd_month + candidate["net_savings_usd_month"] * share
    )
    assert cp.alone == {"autoscaling": cp.alone["autoscaling"], "mig": mig_change.savings_usd_month,
                        "spot": spot.savings_usd_month}  # fmt: skip
    index = json.loads(render(recommend.build_plan(result))["c1/index.json"])
    assert index["plan"]["combine_mig"] == MIG_COMBINE_RULE
    assert [r["kind"] for r in index["recommendations"]].count("spot") == 0
    assert_consistent(recommend.build_plan(result))


def test_spot_candidates_outside_the_mig_change_stay_in_the_reduced_spot_pool() -> None:
    result = recommend.build(small_serving_beside_a_busy_one_on_two_h100_nodes().inputs())
    (mig_change,) = result.of_kind("mig")
    (spot,) = result.of_kind("spot")
    assert workloads_of(mig_change) == (("serve", "embed"),)
    assert set(workloads_of(spot)) == {("serve", "embed"), ("serve", "chat")}
    plan = recommend.build_plan(result)
    (cp,) = plan.clusters
    by_kind = {a.rec.kind: a for a in cp.applied}
    assert workloads_of(by_kind["mig"].rec) == (("serve", "embed"),)
    assert workloads_of(by_kind["spot"].rec) == (("serve", "chat"),)
    (chat,) = [c for c in spot.evidence["candidates"] if c["workload"] == "chat"]
    assert by_kind["spot"].rec.savings_usd_month == pytest.approx(chat["net_savings_usd_month"])
    pools = sorted(
        m.obj["metadata"]["name"]
        for a in cp.applied
        if a.rec.kind != "autoscaling"
        for m in a.rec.manifests
        if m.obj["kind"] == "NodePool"
    )
    assert pools == ["h100-serve-spot", "h100-serve-spot-mig"]
    assert cp.alternatives == ()
    assert_consistent(plan)


def test_a_mig_change_on_another_instance_type_than_the_spot_pool_stays_an_alternative() -> None:
    built = recommend.build(small_serving_on_two_on_demand_h100_nodes().inputs())
    items = [
        replace(r, evidence={**r.evidence, "instance_type": "p4de.24xlarge"}) if r.kind == "mig" else r
        for r in built.items
    ]
    result = replace(built, items=items)
    (mig_change,) = result.of_kind("mig")
    (spot,) = result.of_kind("spot")
    assert set(workloads_of(mig_change)) & set(workloads_of(spot)) == {("serve", "embed")}
    (cp,) = recommend.build_plan(result).clusters
    rank = {id(r): i for i, r in enumerate(result.items, 1)}
    higher, lower = sorted((mig_change, spot), key=lambda r: rank[id(r)])
    assert [a.rec for a in cp.applied if a.rec.kind in ("mig", "spot")] == [higher]
    (alt,) = cp.alternatives
    assert (alt.rec, alt.workloads, alt.instead) == (lower, (("serve", "embed"),), ((higher.kind, rank[id(higher)]),))
    index = json.loads(render(recommend.build_plan(result))["c1/index.json"])
    assert index["alternatives"][0]["kind"] == lower.kind
    assert [r["kind"] for r in index["recommendations"]].count(lower.kind) == 0


def test_each_cluster_gets_its_own_folder() -> None:
    one = recommend.build(time_sliced_serving_on_two_on_demand_nodes().inputs())
    other = recommend.build(idle_half_of_a_training_job().inputs())
    moved = [replace(r, target={**r.target, "cluster": "train-2"}) for r in other.items]
    result = replace(one, items=recommend.ranked([*one.items, *moved], recommend.KINDS))
    plan = recommend.build_plan(result)
    assert [(cp.cluster, cp.folder) for cp in plan.clusters] == [("c1", "c1"), ("train-2", "train-2")]
    assert [a.rec.kind for a in plan.clusters[1].applied] == ["gpu-count"]
    assert plan.savings_usd_month == pytest.approx(sum(cp.savings_usd_month for cp in plan.clusters))
    assert_consistent(plan)
    files = render(plan)
    assert "train-2/gpu-count.yaml" in files and "gpu-count.yaml" not in files
    assert "| train-2 | `train-2/` | 1 | 0 |" in files["README.md"]


@pytest.mark.parametrize("name", ["../etc", "a/b", "UPPER", "", "-x", "ok.name"])
def test_a_cluster_name_is_never_a_path(name: str) -> None:
    folder = folder_of(name)
    assert "/" not in folder and ".." not in folder and folder
    assert folder == name if name == "ok.name" else folder.startswith("cluster-")
