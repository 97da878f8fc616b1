"""The simulated fleet: deterministic per seed, built from real instance types, shaped like the real H200 capture."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import polars as pl
import pytest

from analysis.instances import instance_types
from collector.calibration import calibrate
from collector.calibration import load as load_calibration
from collector.fleet import plan
from collector.simulate import FleetTelemetry
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES, NODES

END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]"


def test_shipped_calibration_is_what_the_real_capture_gives(fixtures: Path) -> None:
    assert calibrate(fixtures / "nvml-h200") == load_calibration()


def test_calibration_phases_say_what_their_names_say() -> None:
    phases = load_calibration()["phases"]
    assert phases["saturated"]["util_median_pct"] >= 95 and phases["saturated"]["power_frac"] > 0.9
    assert phases["memory_held_idle"]["util_median_pct"] == 0
    assert phases["memory_held_idle"]["fb_used_bytes"] > 60 * (1 << 30)
    assert phases["bursty_low"]["util_median_pct"] == 0  # one tiny kernel every 50 ms reads as 0%


def test_same_seed_same_data_other_seed_other_data() -> None:
    def first_day(seed: int):
        day = FleetTelemetry(plan(24, 2, seed, END)).day(1)
        return day.samples, day.allocations

    a, b, c = first_day(3), first_day(3), first_day(4)
    assert a[0].equals(b[0]) and a[1].equals(b[1])
    assert not a[0].equals(c[0])


@pytest.mark.parametrize("gpus", [1, 5, 16, 64, 200])
def test_fleet_has_exactly_the_gpus_asked_for(gpus: int) -> None:
    fleet = plan(gpus, 1, 0, END)
    assert fleet.gpu_count == gpus
    assert len({u for n in fleet.nodes for u in n.gpu_uuids}) == gpus
    assert len({n.name for n in fleet.nodes}) == len(fleet.nodes)


def test_nodes_use_real_instance_types(sim_warehouse: Path) -> None:
    nodes = Lake(sim_warehouse).scan(NODES).collect()
    catalog = instance_types()
    for itype, model, count in nodes.select("instance_type", "gpu_model", "gpu_count").unique().iter_rows():
        assert (catalog[itype].gpu_model, catalog[itype].gpu_count) == (model, count)
    assert set(nodes["capacity_type"]) == {"on-demand", "spot"}
    assert len({json.loads(labels)["karpenter.sh/nodepool"] for labels in nodes["labels"]}) >= 3


def test_pod_names_look_like_kubernetes(sim_warehouse: Path) -> None:
    allocs = Lake(sim_warehouse).scan(GPU_ALLOCATIONS).select("namespace", "pod", "workload").unique().collect()
    for namespace, pod, workload in allocs.iter_rows():
        assert DNS1123.match(namespace) and DNS1123.match(pod) and len(pod) <= 63, pod
        assert pod.startswith(workload + "-"), (pod, workload)
        assert re.fullmatch(
            rf"{re.escape(workload)}-({SUFFIX}{{10}}-{SUFFIX}{{5}}|worker-0|0|\d+-{SUFFIX}{{5}})", pod
        ), pod


def test_workload_shapes_follow_the_capture(sim_warehouse: Path) -> None:
    lake = Lake(sim_warehouse)
    minutes = lake.scan(GPU_MINUTES).collect()
    trainers = minutes.filter(pl.col("pod").str.ends_with("-worker-0") & (pl.col("state") == "active"))
    assert trainers["util_mean_pct"].median() >= 85  # the capture's saturated phase reads 99%
    states = set(minutes["state"])
    assert states == {"active", "idle_held", "idle_allocated", "unallocated", "no_data"}
    deployments = pl.col("pod").str.contains(rf"-{SUFFIX}{{10}}-{SUFFIX}{{5}}$")
    serving = minutes.filter(deployments & (pl.col("state") != "no_data"))
    by_hour = serving.group_by(pl.col("ts").dt.hour().alias("h")).agg(pl.col("util_mean_pct").mean())
    load = dict(by_hour.iter_rows())
    assert sum(load[h] for h in (14, 15, 16)) > 1.5 * sum(load[h] for h in (2, 3, 4))  # daily cycle
    samples = lake.scan(GPU_SAMPLES).collect()
    held_idle = samples.filter((pl.col("util_pct") == 0) & (pl.col("fb_used_bytes") > 1 << 30))
    assert held_idle.height > 0
    limit = 72.0  # L4: the calibration puts an idle, empty GPU at ~11% of its power limit
    empty_l4 = samples.filter((pl.col("gpu_model") == "NVIDIA L4") & (pl.col("fb_used_bytes") < 1 << 30))
    if empty_l4.height:
        assert abs(empty_l4["power_w"].median() / limit - 0.114) < 0.05


def test_the_collector_outage_shows_as_no_data_on_one_node(sim_warehouse: Path) -> None:
    no_data = Lake(sim_warehouse).scan(GPU_MINUTES).filter(pl.col("state") == "no_data").collect()
    assert no_data["node"].n_unique() == 1
    day = dt.datetime(2026, 11, 19, tzinfo=dt.UTC)  # third of three days
    assert no_data["ts"].min() >= day + dt.timedelta(hours=10)
    assert no_data["ts"].max() < day + dt.timedelta(hours=13)
    per_gpu = no_data.group_by("gpu_uuid").len()["len"]
    assert per_gpu.min() >= 177 and per_gpu.max() <= 180  # three hours, less the minute(s) the last sample covers
