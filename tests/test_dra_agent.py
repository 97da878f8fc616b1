"""The node agent with GPUs allocated through DRA: the claim on its gpu_allocations rows, and MIG devices the NVIDIA
DRA driver names (``gpu-<minor>-mig-...``) resolved to the MIG instances NVML reports.

NVML is the stand-in replaying the real H200 capture (tests/nvml_standin.py), in MIG mode with instances of the
capture's own profile table placed by its ``nvidia-smi mig -lgipp`` placements; the kubelet is a real gRPC
pod-resources server (tests/kubelet.py). Device names follow NVIDIA/k8s-dra-driver-gpu ``cmd/gpu-kubelet-plugin``
(``deviceinfo.go`` ``CanonicalName``, ``mig.go`` ``ToCanonicalName``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from analysis.states import StateRules
from collector.dra import mig_names
from collector.nvml import Holder, NvmlSampler
from collector.podresources import api_pb2
from collector.podresources.client import PodResourcesClient
from gpuledger.jobs import ingest
from gpuledger.sources import dra_device_names, kubelet_holders
from tests.kubelet import Kubelet
from tests.nvml_standin import CapturedNVML
from warehouse import rollup
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
IDLE_CONTEXT_S = 14.2
"""Seconds into the capture where one process holds a CUDA context (the idle_context phase)."""
DRIVER = "gpu.nvidia.com"
TRAIN_CLAIM = "ml/llm-train-0-gpu-x7k2p"
EMBED_CLAIM = "ml/embed-mig-q9v4c"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def dra_pod(namespace: str, name: str, container: str, claim: str, *devices: str) -> api_pb2.PodResources:
    """A pod holding ``devices`` of the NVIDIA DRA driver through the ResourceClaim ``namespace/name``."""
    claim_namespace, claim_name = claim.split("/")
    resources = [
        api_pb2.ClaimResource(
            cdi_devices=[api_pb2.CDIDevice(name=f"k8s.{DRIVER}/claim=3f2a-{device}")],
            driver_name=DRIVER,
            pool_name="gpu-node-1",
            device_name=device,
        )
        for device in devices
    ]
    dynamic = api_pb2.DynamicResource(claim_name=claim_name, claim_namespace=claim_namespace, claim_resources=resources)
    container_resources = api_pb2.ContainerResources(name=container, dynamic_resources=[dynamic])
    return api_pb2.PodResources(name=name, namespace=namespace, containers=[container_resources])


def plugin_pod(namespace: str, name: str, container: str, device_id: str) -> api_pb2.PodResources:
    devices = api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[device_id])
    return api_pb2.PodResources(
        name=name, namespace=namespace, containers=[api_pb2.ContainerResources(name=container, devices=[devices])]
    )


def agent(
    fixtures: Path, serve: Callable[..., Path], pods: list[api_pb2.PodResources], **standin: object
) -> tuple[NvmlSampler, Clock]:
    """The sampler wired as `gpuledger agent` wires it (gpuledger.sources.open_reader) to a real kubelet socket."""
    clock = Clock()
    nvml = CapturedNVML(fixtures / "nvml-h200", clock, **standin)  # type: ignore[arg-type]
    sampler = NvmlSampler(cluster="c1", node="gpu-node-1", nvml=nvml, clock=clock)
    sampler.open()
    client = PodResourcesClient(serve(Kubelet(api_pb2.ListPodResourcesResponse(pod_resources=pods))), timeout_s=5)
    sampler.holders = lambda: kubelet_holders(
        client.list_gpu_assignments, {**sampler.device_ids(), **dra_device_names(sampler)}
    )
    clock.now = T0 + dt.timedelta(seconds=IDLE_CONTEXT_S)
    return sampler, clock


def test_the_agent_stores_the_claim_of_a_dra_gpu(fixtures: Path, serve: Callable[..., Path], tmp_path: Path) -> None:
    clock = Clock()
    uuids = [
        d.uuid
        for d in NvmlSampler(cluster="c1", node="n", nvml=CapturedNVML(fixtures / "nvml-h200", clock, count=2)).open()
    ]
    pods = [
        dra_pod("ml", "llm-train-0", "trainer", TRAIN_CLAIM, "gpu-1"),
        plugin_pod("research", "notebook-0", "jupyter", uuids[0]),
    ]
    sampler, _ = agent(fixtures, serve, pods, count=2)
    rows = sampler.read().allocation_dicts()
    got = {(r["gpu_uuid"], r["pod"], r["claim"], r["pid"] is not None) for r in rows}
    assert got == {(uuids[0], "notebook-0", None, True), (uuids[1], "llm-train-0", TRAIN_CLAIM, True)}

    lake = Lake(tmp_path / "wh", create=True)
    ingest(lake, sampler.sample())
    stored = lake.scan(GPU_ALLOCATIONS).sort("gpu_uuid").collect()
    assert set(stored.select("gpu_uuid", "pod", "claim").rows()) == {
        (uuids[0], "notebook-0", None),
        (uuids[1], "llm-train-0", TRAIN_CLAIM),
    }


def test_a_claim_without_a_process_is_still_stored(fixtures: Path, serve: Callable[..., Path]) -> None:
    """A holder the kubelet names but NVML shows no process of (a pod between steps): its row keeps the claim."""
    sampler, clock = agent(fixtures, serve, [dra_pod("ml", "llm-train-0", "trainer", TRAIN_CLAIM, "gpu-0")])
    clock.now = T0  # the capture's first row, before its process started
    rows = [r for r in sampler.read().allocation_dicts() if r["pod"] is not None]
    assert [(r["pod"], r["claim"]) for r in rows] == [("llm-train-0", TRAIN_CLAIM)]


def test_dra_names_of_mig_devices_are_the_instances_nvml_reports(fixtures: Path) -> None:
    """Both of the driver's naming schemes, from NVML's minor number, GI profile id and placement: on the H200, a
    3g.71gb at placement 0 (4 memory slices), a 1g.18gb at 4 and a 1g.18gb+me at 5, GPU instances 1, 2, 3."""
    nvml = CapturedNVML(fixtures / "nvml-h200", Clock(), mig=["3g.71gb", "1g.18gb", "1g.18gb+me"])
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml)
    [gpu] = sampler.open()
    assert [(c.mig_profile, c.mig_instance_id, c.gi_profile_id, c.placement) for c in gpu.children] == [
        ("3g.71gb", 1, 9, (0, 4)),
        ("1g.18gb", 2, 19, (4, 1)),
        ("1g.18gb+me", 3, 20, (5, 1)),
    ]
    assert dra_device_names(sampler) == {
        "gpu-0": (gpu.uuid, None),
        "gpu-0-mig-9-0-4": (gpu.uuid, 1),
        "gpu-0-mig-3g71gb-9-0": (gpu.uuid, 1),
        "gpu-0-mig-19-4-1": (gpu.uuid, 2),
        "gpu-0-mig-1g18gb-19-4": (gpu.uuid, 2),
        "gpu-0-mig-20-5-1": (gpu.uuid, 3),
        "gpu-0-mig-1g18gb-me-20-5": (gpu.uuid, 3),
    }
    assert mig_names(2, None, 19, 6, 1) == ["gpu-2-mig-19-6-1"]


def test_a_dra_mig_device_counts_as_the_mig_instance_held_by_the_claims_pod(
    fixtures: Path, serve: Callable[..., Path], tmp_path: Path
) -> None:
    pods = [
        dra_pod("ml", "llm-train-0", "trainer", TRAIN_CLAIM, "gpu-0-mig-3g71gb-9-0"),  # the newer scheme
        dra_pod("ml", "embed-0", "server", EMBED_CLAIM, "gpu-0-mig-19-4-1"),  # the older one
    ]
    sampler, clock = agent(fixtures, serve, pods, mig=["3g.71gb", "1g.18gb", "1g.18gb+me"])
    uuid = sampler.devices[0].uuid
    holders = sampler.holders() if sampler.holders else []
    assert sorted(holders, key=lambda h: h.pod) == [
        Holder(uuid, 2, "ml", "embed-0", "server", "embed", EMBED_CLAIM),
        Holder(uuid, 1, "ml", "llm-train-0", "trainer", "llm-train", TRAIN_CLAIM),
    ]
    lake = Lake(tmp_path / "wh", create=True)
    for step in range(5):
        clock.now = T0 + dt.timedelta(seconds=IDLE_CONTEXT_S + 2 * step)
        ingest(lake, sampler.sample())
    allocations = lake.scan(GPU_ALLOCATIONS).filter(pl.col("mig_instance_id").is_not_null()).collect()
    by_instance = allocations.group_by("mig_instance_id", "pod", "claim").agg(pl.col("pid").drop_nulls().len())
    assert sorted(by_instance.rows()) == [(1, "llm-train-0", TRAIN_CLAIM, 5), (2, "embed-0", EMBED_CLAIM, 0)]

    rollup.refresh(lake, StateRules())
    minutes = lake.scan(GPU_MINUTES).filter(pl.col("mig_instance_id").is_not_null()).collect()
    held = {r["mig_instance_id"]: (r["mig_profile"], r["pod"], r["state"]) for r in minutes.iter_rows(named=True)}
    assert held == {
        1: ("3g.71gb", "llm-train-0", "idle_allocated"),  # a CUDA context and no work
        2: ("1g.18gb", "embed-0", "idle_allocated"),
        3: ("1g.18gb+me", None, "unallocated"),
    }


def test_without_privilege_a_dra_mig_device_is_not_guessed(
    fixtures: Path, serve: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """An agent that is not root: NVML answers NoPermission for the GPU instance, so its placement, and with it
    which of two 1g.18gb instances the driver's name means, is unknown. The claim is not attributed (nor
    guessed); the whole GPU's name still resolves."""
    caplog.set_level(logging.INFO)
    pods = [dra_pod("ml", "embed-0", "server", EMBED_CLAIM, "gpu-0-mig-1g18gb-19-4")]
    sampler, _ = agent(fixtures, serve, pods, mig=["1g.18gb", "1g.18gb"], privileged=False)
    assert dra_device_names(sampler) == {"gpu-0": (sampler.devices[0].uuid, None)}
    assert (sampler.holders() if sampler.holders else []) == []
    assert all(r["claim"] is None for r in sampler.read().allocation_dicts())
    assert "NVML does not tell its placement (it needs a privileged agent)" in caplog.text
