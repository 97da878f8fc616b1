"""GPUs allocated through DRA (resource.k8s.io ResourceClaims): the kubelet's pod-resources answer, dcgm-exporter's
``dra_*`` labels, and the claim kept with the allocation.

The label names are dcgm-exporter's (NVIDIA/dcgm-exporter ``internal/pkg/transformation/const.go``:
``dra_claim_name``, ``dra_claim_namespace``, ``dra_driver_name``, ``dra_pool_name``, ``dra_device_name``, and
``dra_mig_profile`` / ``dra_mig_device_uuid`` set in ``kubernetes.go`` for a MIG-backed claim); the driver name
``gpu.nvidia.com`` is its ``DRAGPUDriverName``; device names follow NVIDIA/k8s-dra-driver-gpu (``gpu-<minor>``,
``gpu-<minor>-mig-<profile id>-<placement start>-<size>``). The expositions are the real captures'
lines (tests/fixtures/dcgm-exporter) with those labels added by the test.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa

from collector.dcgm import dra_instance_id, parse_exposition
from collector.nvml import NvmlSampler
from collector.podresources import api_pb2
from collector.podresources.client import GpuAssignment, PodResourcesClient
from collector.rows import Records
from gpuledger.jobs import ingest
from gpuledger.sources import dra_device_names, kubelet_holders
from tests.kubelet import Kubelet
from tests.nvml_standin import CapturedNVML
from warehouse.lake import Lake, Partition
from warehouse.schema import GPU_ALLOCATIONS

SCRAPED_AT = dt.datetime(2026, 3, 10, 3, 41, 29, tzinfo=dt.UTC)
H100_GPU1 = "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a"
A100_GPU = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
MIG_UUID = "MIG-4f8a2b1c-9d3e-5a7f-8b6c-1e2d3f4a5b6c"
CLAIM_UID = "7b1e3c2a-5d4f-4e6a-9b8c-0d1e2f3a4b5c"

DRA_PODS = api_pb2.ListPodResourcesResponse(
    pod_resources=[
        # A training pod holding one whole GPU through a claim made from its ResourceClaimTemplate, and an IMEX
        # channel through another driver's claim (not a GPU).
        api_pb2.PodResources(
            name="llm-train-0",
            namespace="ml",
            containers=[
                api_pb2.ContainerResources(
                    name="trainer",
                    dynamic_resources=[
                        api_pb2.DynamicResource(
                            claim_name="llm-train-0-gpu-x7k2p",
                            claim_namespace="ml",
                            claim_resources=[
                                api_pb2.ClaimResource(
                                    cdi_devices=[api_pb2.CDIDevice(name=f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-1")],
                                    driver_name="gpu.nvidia.com",
                                    pool_name="gpu-node-1",
                                    device_name="gpu-1",
                                )
                            ],
                        ),
                        api_pb2.DynamicResource(
                            claim_name="imex-channel-0",
                            claim_namespace="ml",
                            claim_resources=[
                                api_pb2.ClaimResource(
                                    driver_name="compute-domain.nvidia.com",
                                    pool_name="gpu-node-1",
                                    device_name="channel-0",
                                )
                            ],
                        ),
                    ],
                ),
            ],
        ),
        # A device-plugin pod beside it: still read as before.
        api_pb2.PodResources(
            name="notebook-0",
            namespace="research",
            containers=[
                api_pb2.ContainerResources(
                    name="jupyter",
                    devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[A100_GPU])],
                )
            ],
        ),
    ]
)


def test_the_client_reads_dynamic_resources_from_a_real_kubelet_socket(serve: Callable[..., Path]) -> None:
    path = serve(Kubelet(DRA_PODS))
    assert PodResourcesClient(path, timeout_s=5).list_gpu_assignments() == [
        GpuAssignment(
            "ml",
            "llm-train-0",
            "trainer",
            "gpu.nvidia.com",
            "gpu-1",
            claim="ml/llm-train-0-gpu-x7k2p",
            pool="gpu-node-1",
            cdi_devices=(f"k8s.gpu.nvidia.com/claim={CLAIM_UID}-gpu-1",),
        ),
        GpuAssignment("research", "notebook-0", "jupyter", "nvidia.com/gpu", A100_GPU),
    ]


def test_a_dra_gpu_is_held_by_the_pod_holding_the_claim(serve: Callable[..., Path]) -> None:
    path = serve(Kubelet(DRA_PODS))
    client = PodResourcesClient(path, timeout_s=5)
    devices: dict[str, tuple[str, int | None]] = {
        H100_GPU1: (H100_GPU1, None),
        "gpu-1": (H100_GPU1, None),
        A100_GPU: (A100_GPU, None),
    }
    holders = kubelet_holders(client.list_gpu_assignments, devices)
    assert sorted((h.gpu_uuid, h.namespace, h.pod, h.container, h.workload) for h in holders) == [
        (A100_GPU, "research", "notebook-0", "jupyter", "notebook"),
        (H100_GPU1, "ml", "llm-train-0", "trainer", "llm-train"),
    ]


# --- dcgm-exporter's dra_* labels ----------------------------------------------------------------------------------


def _with_labels(line: str, after: str, labels: dict[str, str]) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    assert after in line
    return line.replace(after, after + extra, 1)


def test_dra_labels_name_the_holder_and_keep_the_claim(fixtures: Path) -> None:
    lines = (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_text().split("\n")
    dra = {
        "container": "trainer",
        "namespace": "ml",
        "pod": "llm-train-0",
        "dra_claim_name": "llm-train-0-gpu-x7k2p",
        "dra_claim_namespace": "ml",
        "dra_driver_name": "gpu.nvidia.com",
        "dra_pool_name": "gpu-node-1",
        "dra_device_name": "gpu-1",
    }
    text = "\n".join(
        _with_labels(line, 'DCGM_FI_DRIVER_VERSION="580.105.08"', dra) if 'gpu="1"' in line else line for line in lines
    )
    rows = parse_exposition(text, cluster="c1", scraped_at=SCRAPED_AT)
    held = [a for a in rows.allocations.to_pylist() if a["gpu_uuid"] == H100_GPU1]
    assert [(a["namespace"], a["pod"], a["container"], a["workload"], a["claim"]) for a in held] == [
        ("ml", "llm-train-0", "trainer", "llm-train", "ml/llm-train-0-gpu-x7k2p")
    ]
    others = [a for a in rows.allocations.to_pylist() if a["gpu_uuid"] != H100_GPU1]
    assert [a["claim"] for a in others] == [None]  # GPU 0's device-plugin pod has no claim


def test_mig_devices_created_by_dra_count_as_mig_instances(fixtures: Path) -> None:
    lines = (fixtures / "dcgm-exporter" / "a100_mig_legacy_labels.prom").read_text().split("\n")
    claim = {
        "pod": "embed-5f7c9d8b4-kx2qz",
        "namespace": "ml",
        "container": "server",
        "dra_claim_name": "embed-mig",
        "dra_claim_namespace": "ml",
        "dra_driver_name": "gpu.nvidia.com",
        "dra_pool_name": "ub20-a100-k8s",
        "dra_device_name": "gpu-0-mig-19-13-1",
        "dra_mig_profile": "1g.5gb",
        "dra_mig_device_uuid": MIG_UUID,
    }
    with_id = [_with_labels(line, 'GPU_I_ID="13"', claim) if 'GPU_I_ID="13"' in line else line for line in lines]
    rows = parse_exposition("\n".join(with_id), cluster="c1", scraped_at=SCRAPED_AT)
    assert [(a["mig_instance_id"], a["pod"], a["claim"]) for a in rows.allocations.to_pylist()] == [
        (13, "embed-5f7c9d8b4-kx2qz", "ml/embed-mig")
    ]

    # An exporter that knows the DRA MIG device only by its UUID: its series carry no GPU_I_* labels.
    instance_lines = [line for line in lines if 'GPU_I_ID="13"' in line]
    bare = [
        _with_labels(line.replace(',GPU_I_PROFILE="1g.5gb",GPU_I_ID="13"', ""), 'device="nvidia0"', claim)
        for line in instance_lines
    ]
    device_lines = [line for line in lines if line and "GPU_I_ID" not in line]
    rows = parse_exposition("\n".join(device_lines + bare), cluster="c1", scraped_at=SCRAPED_AT)
    series = {(r["gpu_uuid"], r["mig_instance_id"], r["mig_profile"]) for r in rows.samples.to_pylist()}
    instance = dra_instance_id(MIG_UUID)
    assert series == {(A100_GPU, None, None), (A100_GPU, instance, "1g.5gb")}
    assert instance == dra_instance_id(MIG_UUID) and 0 < instance < 2**31
    assert [(a["mig_instance_id"], a["claim"]) for a in rows.allocations.to_pylist()] == [(instance, "ml/embed-mig")]


def test_a_claim_for_another_profile_does_not_hold_this_instance(fixtures: Path) -> None:
    """dcgm-exporter labels every series of the parent GPU with each of its claims; an instance series of another
    profile is not the claim's device."""
    lines = (fixtures / "dcgm-exporter" / "a100_mig_legacy_labels.prom").read_text().split("\n")
    other = {"pod": "big-0", "namespace": "ml", "dra_claim_name": "big", "dra_mig_profile": "3g.20gb"}
    text = "\n".join(_with_labels(line, 'GPU_I_ID="13"', other) if 'GPU_I_ID="13"' in line else line for line in lines)
    assert parse_exposition(text, cluster="c1", scraped_at=SCRAPED_AT).allocations.num_rows == 0


# --- the claim column -----------------------------------------------------------------------------------------------


def test_old_parts_without_the_claim_column_still_read(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "wh", create=True)
    old_schema = pa.schema([f for f in GPU_ALLOCATIONS.schema if f.name != "claim"])
    old = pa.table(
        {
            "ts": pa.array([SCRAPED_AT], pa.timestamp("us", tz="UTC")),
            "cluster": ["c1"],
            "node": ["gpu-node-1"],
            "gpu_uuid": [H100_GPU1],
            "namespace": ["research"],
            "pod": ["notebook-0"],
            "source": ["dcgm-exporter"],
        }
    )
    old = pa.table(
        [old.column(f.name) if f.name in old.column_names else pa.nulls(1, f.type) for f in old_schema],
        schema=old_schema,
    )
    with lake.writing():
        lake.commit([lake.stage(GPU_ALLOCATIONS, Partition(SCRAPED_AT.date(), "c1"), old)])
    frame = lake.scan(GPU_ALLOCATIONS).collect()
    assert frame.height == 1 and frame["claim"].to_list() == [None] and frame.schema["claim"] == pl.String


def test_tuples_written_before_the_claim_column_still_convert() -> None:
    """A sampler's allocation tuples in the column order of a release before ``claim``: the column reads null."""
    width = len(GPU_ALLOCATIONS.schema) - 1
    row = (SCRAPED_AT, "c1", "n1", H100_GPU1, None, "ml", "p", "c", "p", None, None, None, "nvml", None)[:width]
    table = Records(allocations=[row]).to_rows().allocations
    assert table.column("claim").to_pylist() == [None] and table.column("pod").to_pylist() == ["p"]


def test_a_claim_is_stored_and_read_back(fixtures: Path, tmp_path: Path) -> None:
    lines = (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_text().split("\n")
    dra = {"pod": "llm-train-0", "namespace": "ml", "dra_claim_name": "llm-train-0-gpu-x7k2p"}
    text = "\n".join(
        _with_labels(line, 'DCGM_FI_DRIVER_VERSION="580.105.08"', dra) if 'gpu="1"' in line else line for line in lines
    )
    lake = Lake(tmp_path / "wh", create=True)
    ingest(lake, parse_exposition(text, cluster="c1", scraped_at=SCRAPED_AT))
    stored = lake.scan(GPU_ALLOCATIONS).filter(pl.col("gpu_uuid") == H100_GPU1).collect()
    assert stored["claim"].to_list() == ["ml/llm-train-0-gpu-x7k2p"]  # no dra_claim_namespace: the pod's


def test_dra_names_of_the_nodes_gpus(fixtures: Path) -> None:
    """The NVML stand-in answers the real H200 capture's minor number (0) and its replica's index (1)."""
    now = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=CapturedNVML(fixtures / "nvml-h200", lambda: now, count=2))
    sampler.open()
    names = dra_device_names(sampler)
    assert list(names) == ["gpu-0", "gpu-1"]
    assert [names[n] for n in names] == [(gpu.uuid, None) for gpu in sampler.devices]
