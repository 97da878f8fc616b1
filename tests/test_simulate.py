"""The simulated fleet: deterministic per seed, built from real instance types, shaped like the real H200 capture."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.instance_resources import resources_of
from analysis.instances import instance_types
from collector.calibration import calibrate
from collector.calibration import load as load_calibration
from collector.fleet import Fleet, plan
from collector.simulate import FleetTelemetry
from collector.workloads import workload_from_owner
from gpuledger.settings import Settings
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


@pytest.mark.parametrize("gpus", [64, 1024, 4096])
def test_no_two_pods_share_a_name(gpus: int) -> None:
    """Kubernetes names a pod once per namespace: the 4,096-GPU fleet once gave 12 research nodes the same notebook
    pod (8 names for 64 nodes' StatefulSets), which the node packing read as one pod holding 12 GPUs."""
    holders = plan(gpus, 2, 42, END).holders
    names = [(h.namespace, h.pod) for h in holders]
    assert len(set(names)) == len(names)


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
            rf"{re.escape(workload)}-({SUFFIX}{{10}}-{SUFFIX}{{5}}|worker-0|gpu-group-worker-{SUFFIX}{{5}}|0|\d+-{SUFFIX}{{5}})",
            pod,
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


def _timelines(fleet: Fleet) -> str:
    """A digest of everything the seed draws: every GPU's segments, the nodes, the outage and the shared GPU."""
    digest = hashlib.sha256()
    for name in ("gpu", "start", "end", "kind", "holder", "level", "mem_frac"):
        digest.update(np.ascontiguousarray(fleet.segments[name]).astype(np.float64).tobytes())
    for n in fleet.nodes:
        digest.update(f"{n.name}|{n.zone}|{n.offset_s}|{','.join(n.gpu_uuids)}".encode())
    digest.update(repr((fleet.outage, fleet.partial, fleet.shared)).encode())
    return digest.hexdigest()[:16]


@pytest.mark.parametrize(
    ("gpus", "days", "seed", "expected"),
    [
        (64, 7, 42, "54cde790822b1db4"),
        (16, 3, 42, "c1c05b2bbb0f644e"),
        (200, 3, 0, "a0546b9b3ca5ecd3"),
        (24, 2, 3, "192de4f1ddd1ad38"),
    ],
)
def test_owners_and_requests_leave_the_gpu_timelines_as_the_seed_gave_them(
    gpus: int, days: int, seed: int, expected: str
) -> None:
    # Digests computed with the simulator before pods had owner chains and requests (and before finetune runs were
    # one CronJob's): naming pods must not move a single random draw.
    assert _timelines(plan(gpus, days, seed, END)) == expected


DEMO_GPUS = Settings.model_fields["demo_gpus"].default
DEMO_DAYS = Settings.model_fields["demo_days"].default
TOP_LEVEL = {"Deployment", "StatefulSet", "CronJob", "PyTorchJob", "RayCluster"}
VIA = {"Deployment": "ReplicaSet", "CronJob": "Job"}
"""The owner between a pod and its top-level controller, where there is one."""


@pytest.fixture(scope="module")
def demo_fleet() -> Fleet:
    return plan(DEMO_GPUS, DEMO_DAYS, 42, END)


@pytest.fixture(scope="module")
def demo_day(demo_fleet: Fleet) -> pl.DataFrame:
    rows = pl.from_arrow(FleetTelemetry(demo_fleet).day(2).allocations)
    assert isinstance(rows, pl.DataFrame)
    return rows


def test_every_allocation_row_has_an_owner_chain_up_to_a_top_level_controller(
    demo_day: pl.DataFrame, sim_warehouse: Path
) -> None:
    stored = Lake(sim_warehouse).scan(GPU_ALLOCATIONS).collect()
    for rows in (demo_day, stored):
        pods = rows.select("pod", "workload", "owner_kind", "owner_name", "owner_chain").unique()
        assert pods.null_count().sum_horizontal().item() == 0
        for pod, workload, kind, name, chain in pods.iter_rows():
            links = chain.split("<-")
            assert links[0] == "Pod" and links[-1] == f"{kind}/{name}", chain
            assert kind in TOP_LEVEL and workload == name, chain
            if kind in VIA:
                assert len(links) == 3 and links[1].startswith(f"{VIA[kind]}/"), chain
                parent = links[1].split("/", 1)[1]
                assert pod.startswith(f"{parent}-") and workload_from_owner(VIA[kind], parent, pod) == workload
            else:
                assert len(links) == 2, chain


def test_the_demo_fleet_has_every_kind_of_owner(demo_fleet: Fleet) -> None:
    kinds = {h.owner.kind for h in demo_fleet.holders}
    assert kinds == TOP_LEVEL
    ray = [h for h in demo_fleet.holders if h.owner.kind == "RayCluster"]
    assert all(re.fullmatch(rf"{re.escape(h.workload)}-gpu-group-worker-{SUFFIX}{{5}}", h.pod) for h in ray)


def test_finetune_runs_are_one_cronjob_workload(demo_fleet: Fleet) -> None:
    runs = [h for h in demo_fleet.holders if h.pod.startswith("finetune-")]
    assert len(runs) > 10
    assert {(h.namespace, h.workload, h.owner.kind) for h in runs} == {("research", "finetune", "CronJob")}
    jobs = {h.owner.chain.split("<-")[1] for h in runs if h.owner.chain}
    assert len(jobs) > 10 and all(re.fullmatch(r"Job/finetune-\d{8}", job) for job in jobs), jobs
    assert len({h.pod for h in runs}) == len(runs)


def test_pod_requests_fit_on_their_node(demo_fleet: Fleet, demo_day: pl.DataFrame) -> None:
    per_pod = demo_day.group_by("node", "pod").agg(
        pl.col("cpu_request").n_unique().alias("cpus"),
        pl.col("memory_request_bytes").n_unique().alias("memories"),
        pl.col("cpu_request", "memory_request_bytes").first(),
    )
    assert (per_pod["cpus"] == 1).all() and (per_pod["memories"] == 1).all()  # one value on all of a pod's rows
    assert (per_pod["cpu_request"] > 0).all() and (per_pod["memory_request_bytes"] > 0).all()
    at_once = (
        demo_day.unique(["node", "ts", "pod"])
        .group_by("node", pl.col("ts").dt.truncate("1m"))
        .agg(pl.col("cpu_request").sum(), pl.col("memory_request_bytes").sum())
    )
    itype = {n.name: n.pool.instance_type for n in demo_fleet.nodes}
    for node, _, cpu, memory in at_once.iter_rows():
        resources = resources_of(itype[node])
        assert resources is not None
        assert cpu <= resources.vcpus and memory <= resources.memory_gib * (1 << 30), (node, cpu, memory)
    gpus = {n.name: n.gpu_count for n in demo_fleet.nodes}
    pods = demo_day.unique(["node", "pod"]).select("node", "owner_kind", "cpu_request", "memory_request_bytes")
    assert set(pods["owner_kind"]) == {"Deployment", "CronJob", "PyTorchJob", "RayCluster", "StatefulSet"}
    for node, kind, cpu, memory in pods.iter_rows():
        resources = resources_of(itype[node])
        assert resources is not None
        vcpus, memory_bytes = resources.vcpus, resources.memory_gib * (1 << 30)
        if kind in ("PyTorchJob", "RayCluster"):  # a whole-node trainer asks for most of the node
            assert 0.85 * vcpus <= cpu and 0.85 * memory_bytes <= memory, (node, kind, cpu, memory)
        else:  # one GPU: its share of the node or less
            assert cpu <= vcpus / gpus[node] and memory <= memory_bytes / gpus[node], (node, kind, cpu, memory)
