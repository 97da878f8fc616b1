"""kube-state-metrics series into rows: capacity types, node rows, pod owners as workloads, attribution by requests,
pods' CPU and memory requests.

Pure functions over hand-made series; the real Prometheus runs in tests/test_prometheus.py.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from collector.dcgm import DcgmPoint, rows_from_points
from collector.prometheus.kube_state import (
    attribute,
    capacity_type,
    node_rows,
    owner_workload,
    pod_requests,
    pod_workloads,
)
from collector.prometheus.series import Series
from tests.prometheus_server import A100

CLUSTER = "c1"
T0 = dt.datetime(2024, 11, 2, 23, 58, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"label_karpenter_sh_capacity_type": "spot"}, "spot"),
        ({"label_karpenter_sh_capacity_type": "on-demand"}, "on-demand"),
        ({"label_eks_amazonaws_com_capacity_type": "ON_DEMAND"}, "on-demand"),
        ({"label_eks_amazonaws_com_capacity_type": "SPOT"}, "spot"),
        ({"label_cloud_google_com_gke_spot": "true", "label_cloud_google_com_gke_nodepool": "p"}, "spot"),
        ({"label_cloud_google_com_gke_nodepool": "p"}, "on-demand"),
        ({"label_karpenter_sh_capacity_type": "reserved"}, None),
        ({}, None),
    ],
)
def test_capacity_type_is_normalised(labels: dict[str, str], expected: str | None) -> None:
    assert capacity_type(labels) == expected


def test_node_rows_one_per_node_per_date_with_newest_labels() -> None:
    before, after = int(T0.timestamp()), int(T0.timestamp()) + 240  # 23:58 and 00:02 the next day
    old = {
        "node": "n1",
        "label_node_kubernetes_io_instance_type": "g5.xlarge",
        "label_karpenter_sh_capacity_type": "spot",
    }
    new = {**old, "label_karpenter_sh_capacity_type": "on-demand", "label_nvidia_com_gpu_product": "NVIDIA-A10G"}
    gpus = rows_from_points(
        [DcgmPoint("DCGM_FI_DEV_GPU_UTIL", {"UUID": "GPU-x", "Hostname": "n2", "modelName": "NVIDIA L4"}, T0, 3.0)],
        cluster=CLUSTER,
        source="prometheus",
    ).samples
    rows = node_rows(
        [Series(old, [(before - 60, 1.0), (before, 1.0)]), Series(new, [(before + 30, 1.0), (after, 1.0)])],
        gpus,
        cluster=CLUSTER,
    )
    assert [(r["node"], r["date"].isoformat(), r["capacity_type"]) for r in rows] == [
        ("n1", "2024-11-02", "on-demand"),
        ("n1", "2024-11-03", "on-demand"),
        ("n2", "2024-11-02", None),
    ]
    assert rows[0]["gpu_model"] == "NVIDIA-A10G"  # no DCGM data for n1: GPU Feature Discovery's label
    assert rows[0]["instance_type"] == "g5.xlarge"
    assert json.loads(rows[0]["labels"])["karpenter_sh_capacity_type"] == "on-demand"
    assert (rows[2]["gpu_model"], rows[2]["gpu_count"], rows[2]["labels"]) == ("NVIDIA L4", 1, None)


@pytest.mark.parametrize(
    ("kind", "name", "pod", "workload"),
    [
        ("ReplicaSet", "trainer-7d9f8b6c5d", "trainer-7d9f8b6c5d-x2k4q", "trainer"),
        ("StatefulSet", "notebook", "notebook-0", "notebook"),
        ("Job", "batch-eval-28931460", "batch-eval-28931460-q7x2z", "batch-eval"),
        ("DaemonSet", "agent", "agent-q7x2z", "agent"),
        ("<none>", "<none>", "serve-7d9f8b6c5d-x2k4q", "serve"),
        (None, None, "bare-pod", "bare-pod"),
    ],
)
def test_owner_workload(kind: str | None, name: str | None, pod: str, workload: str) -> None:
    assert owner_workload(kind, name, pod) == workload


def test_pod_workloads_prefer_the_controller_owner() -> None:
    pod = {"namespace": "ns", "pod": "p-7d9f8b6c5d-x2k4q"}
    owners = [
        Series({**pod, "owner_kind": "ConfigMap", "owner_name": "cm", "owner_is_controller": "false"}, [(0.0, 1.0)]),
        Series({**pod, "owner_kind": "ReplicaSet", "owner_name": "p-7d9f8b6c5d", "owner_is_controller": "true"}, []),
        Series(
            {**pod, "owner_kind": "ReplicaSet", "owner_name": "p-7d9f8b6c5d", "owner_is_controller": "true"}, [(0, 1)]
        ),
        Series(
            {
                "exported_namespace": "x",
                "exported_pod": "y-0",
                "namespace": "ksm",
                "owner_kind": "StatefulSet",
                "owner_name": "y",
                "owner_is_controller": "true",
            },
            [(0.0, 1.0)],
        ),
    ]
    assert pod_workloads(owners) == {("ns", "p-7d9f8b6c5d-x2k4q"): "p", ("x", "y-0"): "y"}


def _mig_rows(holder_13: bool = False) -> list[DcgmPoint]:
    base = {"UUID": "GPU-m", "gpu": "0", "modelName": A100, "Hostname": "n"}
    points = [
        DcgmPoint("DCGM_FI_DEV_GPU_TEMP", base, T0, 40.0),
        DcgmPoint("DCGM_FI_DEV_GPU_TEMP", {**base, "UUID": "GPU-w"}, T0, 40),
    ]
    for gi in ("13", "14"):
        labels = {**base, "GPU_I_PROFILE": "1g.5gb", "GPU_I_ID": gi}
        if holder_13 and gi == "13":
            labels |= {"pod": "a-0", "namespace": "ns", "container": "c"}
        points.append(DcgmPoint("DCGM_FI_DEV_FB_USED", labels, T0, 100.0))
    return points


def _request(pod: str, resource: str, amount: float = 1.0, node: str = "n") -> Series:
    labels = {"namespace": "ns", "pod": pod, "container": "c", "node": node, "resource": resource}
    return Series(labels, [(T0.timestamp(), amount)])


def _holders(points: list[DcgmPoint], requests: list[Series], single: tuple[str, ...] = ()) -> set[tuple[object, ...]]:
    rows = rows_from_points(points, cluster=CLUSTER, source="prometheus")
    table = attribute(rows, requests, {("ns", "a-0"): "a"}, cluster=CLUSTER, single_strategy_nodes=single)
    return {(r["gpu_uuid"], r["mig_instance_id"], r["pod"], r["workload"]) for r in table.to_pylist()}


def test_attribute_fills_only_what_requests_prove() -> None:
    mig = "nvidia_com_mig_1g_5gb"
    # one running container wants the one whole GPU nobody holds (the MIG parent GPU-m is not a whole GPU)
    assert _holders(_mig_rows(), [_request("w-0", "nvidia_com_gpu")]) == {("GPU-w", None, "w-0", "w")}
    # DCGM names a-0 on instance 13: the only other requester of a 1g.5gb gets instance 14, a-0 gets its owner
    assert _holders(_mig_rows(True), [_request("a-0", mig), _request("b-0", mig)]) == {
        ("GPU-m", 13, "a-0", "a"),
        ("GPU-m", 14, "b-0", "b"),
    }
    # two candidates for two free instances, a count that does not match, another node: nothing is guessed
    assert _holders(_mig_rows(), [_request("a-0", mig), _request("b-0", mig)]) == set()
    assert _holders(_mig_rows(), [_request("b-0", mig, 1)]) == set()
    assert _holders(_mig_rows(), [_request("b-0", mig, 2, node="other")]) == set()
    assert _holders(_mig_rows(), [_request("b-0", mig, 2)]) == {("GPU-m", 13, "b-0", "b"), ("GPU-m", 14, "b-0", "b")}
    # the single strategy exposes MIG instances as nvidia_com_gpu: 2 instances + 1 whole GPU
    assert len(_holders(_mig_rows(), [_request("b-0", "nvidia_com_gpu", 3)], single=("n",))) == 3


def test_pod_requests_are_per_pod_per_step_and_null_where_not_requested() -> None:
    t0, t1 = T0.timestamp(), T0.timestamp() + 60
    series = [
        # the query sums over containers already; a pod renamed exported_* by a ServiceMonitor is still that pod
        Series({"namespace": "ns", "pod": "a-0", "resource": "cpu"}, [(t0, 4.25), (t1, 4.25)]),
        Series({"namespace": "ns", "pod": "a-0", "resource": "memory"}, [(t0, 17448304640.0)]),
        Series({"namespace": "kube-system", "exported_namespace": "ml", "exported_pod": "b-0", "resource": "memory"},
               [(t0, 8e9)]),
        Series({"namespace": "ns", "pod": "c-0", "resource": "nvidia_com_gpu"}, [(t0, 1.0)]),
    ]  # fmt: skip
    frame = pod_requests(series, lambda s: dt.datetime.fromtimestamp(s, dt.UTC)).sort("namespace", "pod", "ts")
    assert frame.rows() == [
        ("ml", "b-0", T0, None, 8_000_000_000),
        ("ns", "a-0", T0, 4.25, 17_448_304_640),
        ("ns", "a-0", T0 + dt.timedelta(seconds=60), 4.25, None),
    ]
