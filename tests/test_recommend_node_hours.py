"""The plan priced by the nodes that go away (analysis.recommend.node_hours): hand-made fleets of real instance types,
each figure worked by hand from node-hours x the shipped price per node-hour."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import polars as pl
import pytest

from analysis.pricing import ON_DEMAND, SPOT, PriceCatalog
from analysis.recommend.manifests import node_selector_patch, nodepool, requirement
from analysis.recommend.model import Manifest, Recommendation, RecommendationSet
from analysis.recommend.node_hours import BUCKET_HOURS, NodeFleet, PodRun, Pool, bank, node_fleet
from analysis.recommend.packing import PoolSpec, units
from analysis.recommend.plan import build_plan
from analysis.units import HOURS_PER_MONTH
from analysis.window import Window

CATALOG = PriceCatalog.build()
START = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
WINDOW = Window(START, START + dt.timedelta(days=1))
MONTH = HOURS_PER_MONTH / 24
H100 = "NVIDIA H100 80GB HBM3"
P5 = ("c1", "h100-train", "p5.48xlarge", ON_DEMAND)
P5_USD = 55.04  # analysis/data/aws_nvidia_gpu_instance_types.csv, p5.48xlarge on-demand us-east-1
G6 = ("c1", "l4-serve", "g6.12xlarge", ON_DEMAND)


def pool(key: tuple[str, str, str, str], gpus: int, usd: float, vcpus: float | None = None) -> Pool:
    return Pool(PoolSpec(key, gpus, usd, vcpus, None), None, "us-east-1", "hand-made")


def pod(
    key: tuple[str, str, str, str], workload: str, name: str, gpu: Fraction, hours: range, cpu: float = 0.0
) -> PodRun:
    return PodRun(key, "ml", workload, name, (units(gpu), cpu, 0.0), tuple(hours))


def fleet(pools: list[Pool], pods: list[PodRun], seen: dict[tuple[str, str, str, str], int]) -> NodeFleet:
    return NodeFleet(
        WINDOW,
        {p.key: p for p in pools},
        tuple(pods),
        {k: dict.fromkeys(range(24), n) for k, n in seen.items()},
        {},
        CATALOG,
    )


def rec(kind: str, workloads: list[str], evidence: dict[str, object], manifests: tuple[Manifest, ...] = (),
        group: str = "h100-train", savings: float = 1000.0) -> Recommendation:  # fmt: skip
    patches = tuple(node_selector_patch("training", "ml", w, {"karpenter.sh/nodepool": "x"}, "why") for w in workloads)
    target = {"cluster": "c1", "node_group": group, "namespace": None, "workload": None}
    return Recommendation(
        kind, target, f"{kind} change", evidence, savings, "hand-made", {"pods_restarted": 1}, "low", 1.0, (),
        (*manifests, *patches),
    )  # fmt: skip


def spot_pool(name: str, itype: str) -> Manifest:
    wanted = [requirement("node.kubernetes.io/instance-type", itype), requirement("karpenter.sh/capacity-type", SPOT)]
    obj = nodepool(
        name, requirements=wanted, gpu_limit=16, node_class="default", consolidation="WhenEmpty",
        consolidate_after="10m", budgets=[],
    )  # fmt: skip
    return Manifest(obj)


def test_spot_for_two_whole_node_jobs_banks_their_node_hours_at_the_price_difference() -> None:
    """Two jobs, each on a whole p5.48xlarge (8 GPUs) for 10 hours, move to a spot pool: 20 on-demand node-hours
    go, 20 spot node-hours come: saving = 20 x (55.04 - spot price per node-hour) x 730/24 - the expected loss."""
    jobs = [pod(P5, f"job{i}", f"job{i}-worker-0", Fraction(8), range(10)) for i in range(2)]
    nodes = fleet([pool(P5, 8, P5_USD)], jobs, {})
    spot = CATALOG.gpu_hour_price("p5.48xlarge", SPOT, H100, "us-east-1", gpu_count=8).usd_per_node_hour
    assert spot is not None and spot < P5_USD
    change = rec("spot", ["job0", "job1"], {"candidates": [{"interruption_cost_usd_month": 3.0}]},
                 (spot_pool("h100-train-spot", "p5.48xlarge"),))  # fmt: skip
    (banked,), after = bank(nodes, "c1", [change])
    assert banked.spot_loss_usd_month == 3.0
    assert banked.savings_usd_month == pytest.approx(20 * (P5_USD - spot) * MONTH - 3.0)
    assert after.after[("c1", "h100-train-spot", "p5.48xlarge", SPOT)] == 20 * BUCKET_HOURS
    assert after.after[P5] == 0.0 and after.packed_today[P5] == 20.0


def test_mig_that_frees_gpus_but_no_node_saves_nothing_and_says_what_would_have_to_move() -> None:
    """8 one-GPU pods on one p5.48xlarge; 6 move to 3g.40gb (3/7 of a GPU): 3 GPUs free, the node stays: $0."""
    pods = [pod(P5, "embed" if i < 6 else "chat", f"p{i}", Fraction(1), range(24)) for i in range(8)]
    nodes = fleet([pool(P5, 8, P5_USD)], pods, {})
    change = rec(
        "mig", ["embed"],
        {"gpu_model": H100, "workloads": [{"namespace": "ml", "workload": "embed", "profile": "3g.40gb"}]},
    )  # fmt: skip
    (banked,), _ = bank(nodes, "c1", [change])
    assert banked.savings_usd_month == 0.0
    assert "frees 3 of 8 GPUs on 1 node" in banked.note
    assert "5 more GPUs (0 vCPUs) of other pods would have to move to free a node" in banked.note


def test_autoscaling_banks_the_loose_nodes_down_to_its_floor() -> None:
    """3 nodes seen all day; today's pods pack onto 1: min nodes 2 keeps 2, so 1 node x 24 h goes."""
    pods = [pod(P5, "train", "t-0", Fraction(8), range(24))]
    nodes = fleet([pool(P5, 8, P5_USD)], pods, {P5: 3})
    change = rec("autoscaling", [], {"min_nodes": 2})
    (banked,), after = bank(nodes, "c1", [change])
    assert banked.pools[0].node_hours_before == 72.0 and banked.pools[0].node_hours_after == 48.0
    assert banked.savings_usd_month == pytest.approx(24 * P5_USD * MONTH)
    assert after.floors == {P5: 2}


def test_autoscaling_after_a_change_that_empties_its_group_drops_its_floor_and_says_so() -> None:
    """The spot change moves the group's only job away: the floor of 1 would keep an empty node, so the plan banks
    every seen node-hour of the group and says the exported min should drop."""
    jobs = [pod(P5, "job0", "job0-w", Fraction(8), range(24))]
    nodes = fleet([pool(P5, 8, P5_USD)], jobs, {P5: 1})
    move = rec("spot", ["job0"], {"candidates": []}, (spot_pool("h100-train-spot", "p5.48xlarge"),))
    scale = rec("autoscaling", [], {"min_nodes": 1})
    (auto, spot), after = bank(nodes, "c1", [scale, move])
    assert after.after[P5] == 0.0
    assert "needs at least 0 node(s), not 1" in auto.note
    total = auto.savings_usd_month + spot.savings_usd_month
    spot_usd = after.pools[[p.key for p in after.pools].index(("c1", "h100-train-spot", "p5.48xlarge", SPOT))]
    assert total == pytest.approx(24 * (P5_USD - spot_usd.spec.usd_per_hour) * MONTH)


def test_idle_reclaim_removes_the_hours_past_the_threshold() -> None:
    """A notebook alone on a g6.12xlarge from hour 0 to 24, idle from hour 2: reclaimed after 6 idle hours, hours
    8-23 go (16 node-hours)."""
    notebook = pod(G6, "nb", "nb-0", Fraction(1), range(24))
    nodes = fleet([pool(G6, 4, 4.6016)], [notebook], {})
    nodes = NodeFleet(
        nodes.window, nodes.pools, nodes.pods, nodes.seen, {("c1", "ml", "nb"): frozenset(range(8, 24))}, CATALOG
    )
    (banked,), _ = bank(nodes, "c1", [rec("idle-reclaim", ["nb"], {}, group="l4-serve")])
    assert banked.savings_usd_month == pytest.approx(16 * 4.6016 * MONTH)


def test_a_change_that_adds_node_hours_leaves_the_plan_as_an_alternative() -> None:
    """One of four one-GPU pods on a g6.12xlarge moves to a spot g6.12xlarge pool: the old node stays for the other
    three, a new node opens: it would cost more, so the plan leaves it out and says why."""
    pods = [pod(G6, "api" if i else "ocr", f"p{i}", Fraction(1), range(24)) for i in range(4)]
    nodes = fleet([pool(G6, 4, 4.6016)], pods, {G6: 1})
    change = rec("spot", ["ocr"], {"candidates": []}, (spot_pool("l4-serve-spot", "g6.12xlarge"),), group="l4-serve")
    result = RecommendationSet(WINDOW, [change], fleet=nodes)
    (cp,) = build_plan(result).clusters
    assert cp.applied == () and cp.savings_usd_month == 0.0
    (alt,) = cp.alternatives
    assert alt.reason.startswith("not applied: it would cost ") and "+24 node-hours" in alt.reason
    assert alt.savings_usd_month < 0 and alt.instead == ()


def test_a_pod_whose_cpu_request_fills_a_node_keeps_it() -> None:
    """Two one-GPU pods of a g6.12xlarge (48 vCPUs) requesting 40 vCPUs each need two nodes; time-slicing one of
    them onto a 1/4 GPU still needs its own node: nothing banked, and the note names the vCPUs."""
    pods = [pod(G6, f"w{i}", f"w{i}-0", Fraction(1), range(24), cpu=40.0) for i in range(2)]
    nodes = fleet([pool(G6, 4, 4.6016, vcpus=48.0)], pods, {})
    change = rec("time-slicing", ["w0"], {"replicas_per_gpu": 4}, group="l4-serve")
    (banked,), after = bank(nodes, "c1", [change])
    assert after.packed_today[G6] == 48.0
    assert banked.savings_usd_month == pytest.approx(0.0)


def test_mig_on_a_spot_pool_banks_the_slices_packed_on_spot_nodes() -> None:
    """14 one-GPU pods of one workload on two on-demand p5.48xlarge (8 GPUs each) all day; the MIG change on the spot
    pool moves them to 1g.10gb (1/7 of a GPU) on the spot NodePool it exports: 2 GPUs, one spot node. Saving =
    (48 on-demand node-hours x 55.04 - 24 spot node-hours x the spot price) x 730/24 - the loss x 1/7."""
    pods = [pod(P5, "embed", f"embed-{i}", Fraction(1), range(24)) for i in range(14)]
    nodes = fleet([pool(P5, 8, P5_USD)], pods, {})
    spot = CATALOG.gpu_hour_price("p5.48xlarge", SPOT, H100, "us-east-1", gpu_count=8).usd_per_node_hour
    assert spot is not None
    evidence = {
        "gpu_model": H100,
        "workloads": [{"namespace": "ml", "workload": "embed", "profile": "1g.10gb"}],
        "spot": {"candidates": [{"namespace": "ml", "workload": "embed", "interruption_cost_usd_month": 7.0}]},
    }
    change = rec("mig", ["embed"], evidence, (spot_pool("h100-train-spot-mig", "p5.48xlarge"),))
    (banked,), after = bank(nodes, "c1", [change])
    assert after.packed_today[P5] == 48.0 and after.after[P5] == 0.0
    assert after.after[("c1", "h100-train-spot-mig", "p5.48xlarge", SPOT)] == 24 * BUCKET_HOURS
    assert banked.spot_loss_usd_month == pytest.approx(1.0)
    assert banked.savings_usd_month == pytest.approx((48 * P5_USD - 24 * spot) * MONTH - 1.0)
    alone = rec("mig", ["embed"], {k: v for k, v in evidence.items() if k != "spot"})
    (on_demand,), _ = bank(nodes, "c1", [alone])  # the same slices on the on-demand nodes: one node goes
    assert on_demand.savings_usd_month == pytest.approx(24 * P5_USD * MONTH)


A100 = "NVIDIA A100-SXM4-80GB"
P4DE = ("c1", "a100-research", "p4de.24xlarge", ON_DEMAND)


def _held_fleet(held: list[tuple[str, str, str, float | None]]) -> NodeFleet:
    """``node_fleet`` over two p4de.24xlarge nodes present for 2 h and ``held`` rows (node, GPU, pod, vCPUs
    requested), each held for both hours."""
    hours = [START, START + dt.timedelta(hours=1)]
    nodes = ["n1", "n2"]
    held_rows = pl.DataFrame(
        [
            {"cluster": "c1", "node": node, "gpu_model": A100, "bucket": hour, "namespace": "research",
             "workload": pod.rsplit("-", 1)[0], "pod": pod, "gpu_uuid": gpu, "mig_instance_id": None,
             "mig_profile": None, "share": 1.0, "cpu_request": cpu, "memory_request_bytes": None}
            for node, gpu, pod, cpu in held for hour in hours
        ],
        schema_overrides={"mig_instance_id": pl.Int64, "mig_profile": pl.String, "memory_request_bytes": pl.Int64,
                          "cpu_request": pl.Float64},
    )  # fmt: skip
    present = pl.DataFrame([{"cluster": "c1", "node": n, "bucket": h} for n in nodes for h in hours])
    facts = pl.DataFrame(
        [{"cluster": "c1", "node": n, "node_group": P4DE[1], "instance_type": P4DE[2], "capacity_type": P4DE[3],
          "region": "us-east-1", "gpu_count": 8, "gpu_count_basis": "instance type"} for n in nodes]
    )  # fmt: skip
    prices = pl.DataFrame(
        [{"cluster": "c1", "node": n, "usd_per_gpu_hour": 5.12, "price_source": "hand-made"} for n in nodes]
    )
    streaks = pl.DataFrame(
        schema={"cluster": pl.String, "namespace": pl.String, "workload": pl.String, "start": pl.Datetime("us", "UTC"),
                "end": pl.Datetime("us", "UTC"), "minutes": pl.Int64}
    )  # fmt: skip
    return node_fleet(WINDOW, held_rows, present, facts, prices, streaks, CATALOG, idle_reclaim_hours=24.0)


def test_a_pod_seen_on_two_nodes_in_one_hour_requests_what_it_held_on_one() -> None:
    """A StatefulSet pod moved to another node keeps its name: its hour on both nodes is one pod of one GPU, not a
    pod of two GPUs (the 4,096-GPU simulated fleet once summed 12 such GPUs into a request no 8-GPU node takes)."""
    made = _held_fleet([("n1", "GPU-a", "jupyter-ann-0", None), ("n2", "GPU-b", "jupyter-ann-0", None)])
    (only,) = made.pods
    assert (only.pod, only.request[0], only.hours) == ("jupyter-ann-0", units(Fraction(1)), (0, 1))


def test_a_request_no_node_of_its_pool_takes_is_named_and_the_plan_still_runs() -> None:
    """A p4de.24xlarge has 96 vCPUs: a pod requesting 500 is not packed, the note names it, and the rest is banked."""
    made = _held_fleet([("n1", "GPU-a", "huge-0", 500.0), ("n2", "GPU-b", "small-0", 4.0)])
    assert [p.pod for p in made.pods] == ["small-0"]
    (note,) = [n for n in made.notes if "fit on no node" in n]
    assert note == (
        "1 pod request(s) fit on no node of their pool and are not packed: research/huge-0 in "
        "c1/a100-research/p4de.24xlarge/on-demand (500 vCPUs requested, 96 per node, 2 h); check the pods' GPU "
        "requests and the nodes' instance types"
    )
    _, nodes = bank(made, "c1", [])
    assert nodes.packed_today[P4DE] == 2.0  # small-0 on one node for 2 h
