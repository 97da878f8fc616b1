"""What-if node packing (analysis.recommend.packing): node counts and dollars worked by hand on hand-made frames."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import pytest

from analysis.recommend.packing import (
    InvalidGpuRequest,
    MissingPackingColumns,
    PodDoesNotFit,
    UnknownNodePool,
    gpu_share,
    pack,
    what_if,
)

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
P5 = ("train", "h100-train", "p5.48xlarge", "on_demand")
G6 = ("serve", "l4-serve", "g6.12xlarge", "on_demand")


def pools(*rows: tuple[tuple[str, str, str, str], int, float, float | None, float | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"cluster": key[0], "node_group": key[1], "instance_type": key[2], "capacity_type": key[3],
             "gpus_per_node": gpus, "usd_per_node_hour": usd, "vcpus_per_node": vcpus, "memory_gib_per_node": memory}
            for key, gpus, usd, vcpus, memory in rows
        ],
        schema_overrides={"vcpus_per_node": pl.Float64, "memory_gib_per_node": pl.Float64},
    )  # fmt: skip


def pods(pool: tuple[str, str, str, str], specs: list[tuple[str, float, float | None]], hours: int = 1) -> pl.DataFrame:
    """One row per (pod, hour): ``specs`` = (pod, GPU share, vCPUs)."""
    rows: list[dict[str, Any]] = []
    for hour in range(hours):
        for name, gpu, cpu in specs:
            rows.append(
                {"cluster": pool[0], "node_group": pool[1], "instance_type": pool[2], "capacity_type": pool[3],
                 "bucket": T0 + dt.timedelta(hours=hour), "namespace": "ml", "pod": name, "gpu": gpu, "cpu": cpu}
            )  # fmt: skip
    return pl.DataFrame(rows, schema_overrides={"cpu": pl.Float64})


def test_gpu_share_of_whole_mig_and_time_sliced_requests() -> None:
    assert gpu_share(2) == 2.0
    assert gpu_share(mig_slices=3) == pytest.approx(3 / 7)
    assert gpu_share(mig_slices=1, gpu_slices=4) == 0.25
    assert gpu_share(replicas=4) == 0.25


def test_mig_that_frees_3_of_8_gpus_on_a_node_saves_nothing_and_says_what_would_have_to_move() -> None:
    """8 one-GPU pods fill one p5.48xlarge (8 GPUs). Six move to 3g.40gb (3/7): two per GPU = 3 GPUs, plus 2 whole
    GPUs = 5 in use, 3 free, still 1 node: 0 node-hours removed, $0; the 5 GPUs left would have to move."""
    table = pools((P5, 8, 55.04, None, None))
    today = pods(P5, [(f"p{i}", 1.0, None) for i in range(8)], hours=24)
    changed = pods(P5, [(f"p{i}", gpu_share(mig_slices=3) if i < 6 else 1.0, None) for i in range(8)], hours=24)
    result = what_if(table, today, changed)
    assert result.nodes["nodes_before"].to_list() == [1] * 24
    assert result.nodes["nodes_after"].to_list() == [1] * 24
    assert result.nodes["gpus_in_use_after"].to_list() == [5] * 24
    assert result.node_hours_removed == 0.0
    assert result.savings_usd == 0.0
    assert result.notes == (
        "train/h100-train/p5.48xlarge/on_demand: frees 3 of 8 GPUs on 1 node; 5 more GPUs of other pods would have to "
        "move to free a node",
    )


def test_time_slicing_four_one_gpu_pods_onto_one_gpu_frees_a_node() -> None:
    """g6.12xlarge, 4 GPUs, $5/h (hand-made price). Today 4 inference pods x 1 GPU + 3 other 1-GPU pods = 7 GPUs:
    2 nodes. Time-sliced k=4 the four share 1 GPU: 3 + 1 = 4 GPUs, 1 node. 24 hours x 1 node x $5 = $120."""
    table = pools((G6, 4, 5.0, 48.0, 192.0))
    others = [(f"other{i}", 1.0, 4.0) for i in range(3)]
    today = pods(G6, [(f"infer{i}", 1.0, 4.0) for i in range(4)] + others, hours=24)
    changed = pods(G6, [(f"infer{i}", gpu_share(replicas=4), 4.0) for i in range(4)] + others, hours=24)
    result = what_if(table, today, changed)
    assert result.nodes["nodes_before"].to_list() == [2] * 24
    assert result.nodes["nodes_after"].to_list() == [1] * 24
    assert result.node_hours_removed == 24.0
    assert result.savings_usd == 120.0
    assert result.notes == ()
    assert result.nodes["to_free_a_node"].null_count() == 24


def test_a_pod_whose_cpu_request_does_not_fit_keeps_a_node() -> None:
    """Same change, but each time-sliced pod asks 16 vCPUs and each other pod 10 of the node's 48. After: the three
    1-GPU pods (30 vCPUs) open node 0; one 16-vCPU replica fits (46 vCPUs, 4 GPUs in use), the next does not (62 > 48)
    and opens node 1, which takes the other three (48 vCPUs, 1 GPU in use). 7 GPUs in use before, 5 after, 2 nodes
    both times: $0, and the least-used node holds 1 GPU and 48 vCPUs of other pods. Unchecked CPU: 1 node, $5."""
    table = pools((G6, 4, 5.0, 48.0, 192.0))
    others = [(f"other{i}", 1.0, 10.0) for i in range(3)]
    today = pods(G6, [(f"infer{i}", 1.0, 16.0) for i in range(4)] + others)
    changed = pods(G6, [(f"infer{i}", gpu_share(replicas=4), 16.0) for i in range(4)] + others)
    result = what_if(table, today, changed)
    assert result.nodes.row(0, named=True)["nodes_before"] == 2
    assert result.nodes.row(0, named=True)["nodes_after"] == 2
    assert result.savings_usd == 0.0
    assert result.notes == (
        "serve/l4-serve/g6.12xlarge/on_demand: frees 2 of 8 GPUs on 2 nodes; 1 more GPUs (48 vCPUs) of other pods "
        "would have to move to free a node",
    )
    without_cpu = what_if(pools((G6, 4, 5.0, None, None)), today, changed)
    assert without_cpu.savings_usd == 5.0


def test_whole_gpu_pods_need_free_gpus_and_placements_are_first_fit_decreasing() -> None:
    """A 4-GPU pod cannot use GPUs a 1/2 share already sits on: 4-GPU pod on node 0, 2-GPU pod on node 1, the two
    halves share GPU 2 of node 1 (first fit), so 2 nodes."""
    table = pools((G6, 4, 5.0, None, None))
    packing = pack(table, pods(G6, [("half-a", 0.5, None), ("big", 4.0, None), ("pair", 2.0, None),
                                     ("half-b", 0.5, None)]))  # fmt: skip
    assert dict(packing.placements.select("pod", "node").iter_rows()) == {
        "ml/big": 0, "ml/pair": 1, "ml/half-a": 1, "ml/half-b": 1,
    }  # fmt: skip
    assert packing.nodes.row(0, named=True)["nodes"] == 2
    assert packing.nodes.row(0, named=True)["gpus_in_use"] == 7


def test_baseline_is_todays_pods_packed_not_todays_loose_fleet() -> None:
    """Nothing changes: the same pods packed twice remove no node-hours, whatever nodes the fleet runs today."""
    table = pools((P5, 8, 55.04, None, None))
    today = pods(P5, [(f"p{i}", 1.0, None) for i in range(3)], hours=2)
    result = what_if(table, today, today, bucket_hours=0.5)
    assert result.nodes["nodes_before"].to_list() == [1, 1]
    assert result.savings_usd == 0.0


@pytest.mark.parametrize(
    ("frame", "error", "message"),
    [
        (pods(P5, [("odd", 1.5, None)]), InvalidGpuRequest,
         "pod ml/odd requests 1.5 GPUs: a GPU request is a share below 1 (a MIG profile, a time-sliced replica) or "
         "whole GPUs; fix the request"),
        (pods(P5, [("huge", 16.0, None)]), PodDoesNotFit,
         "pod ml/huge fits on no node of pool train/h100-train/p5.48xlarge/on_demand: 16 GPUs requested, 8 per node; "
         "fix the request or move it to a larger instance type"),
        (pods(G6, [("lost", 1.0, None)]), UnknownNodePool,
         "pod ml/lost runs in node pool serve/l4-serve/g6.12xlarge/on_demand, which the pools frame does not list: add "
         "the pool with its GPUs per node and price"),
        (pods(P5, [("x", 1.0, None)]).drop("gpu"), MissingPackingColumns,
         "the pods frame lacks column(s) gpu: add them to pack its pods onto nodes"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_with_the_fix(frame: pl.DataFrame, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        pack(pools((P5, 8, 55.04, None, None)), frame)
    assert str(raised.value) == message
