"""One plan per cluster (analysis.recommend.plan, files.render): on hand-made fleets (tests/recommend_inputs.py), no
workload gets two changes, spot + time-slicing become one time-sliced spot pool, MIG and a spot pool without its
MIG config do not both apply, every file names its cluster, and the headline is the sum of the applied plan."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

import pytest
import yaml

from analysis import recommend
from analysis.recommend.files import render
from analysis.recommend.model import RecommendOptions
from analysis.recommend.plan import Plan, folder_of, workloads_of
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


def test_mig_and_a_spot_pool_without_the_mig_config_do_not_both_apply() -> None:
    result = recommend.build(small_serving_on_two_on_demand_h100_nodes().inputs())
    (mig,) = result.of_kind("mig")
    (spot,) = result.of_kind("spot")
    assert set(workloads_of(mig)) & set(workloads_of(spot)) == {("serve", "embed")}
    (cp,) = recommend.build_plan(result).clusters
    rank = {id(r): i for i, r in enumerate(result.items, 1)}
    higher, lower = sorted((mig, spot), key=lambda r: rank[id(r)])
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
