"""End to end on one node: the kubelet's pod-resources answer (a real gRPC server) joined with NVML's processes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from collector.nvml import NvmlSampler
from collector.podresources import api_pb2
from collector.podresources.client import PodResourcesClient
from gpuledger.sources import kubelet_holders
from tests.kubelet import Kubelet
from tests.nvml_standin import CapturedNVML

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


class Clock:
    """Starts the stand-in's replay at T0, then reads 14.2 s later: the capture's idle_context phase, where one
    process holds a CUDA context."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def sampler_at_idle_context(fixtures: Path, count: int) -> tuple[NvmlSampler, CapturedNVML]:
    clock = Clock()
    nvml = CapturedNVML(fixtures / "nvml-h200", clock, count=count)
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=nvml, clock=clock)
    sampler.open()
    clock.now = T0 + dt.timedelta(seconds=14.2)
    return sampler, nvml


def pod(namespace: str, name: str, container: str, resource: str, *device_ids: str) -> api_pb2.PodResources:
    devices = api_pb2.ContainerDevices(resource_name=resource, device_ids=list(device_ids))
    return api_pb2.PodResources(
        name=name, namespace=namespace, containers=[api_pb2.ContainerResources(name=container, devices=[devices])]
    )


def test_pods_from_the_kubelet_name_the_processes_nvml_sees(serve: Callable[..., Path], fixtures: Path) -> None:
    sampler, nvml = sampler_at_idle_context(fixtures, 3)
    gpu0, gpu1, gpu2 = (d.uuid for d in sampler.devices)
    response = api_pb2.ListPodResourcesResponse(
        pod_resources=[
            # one container holding two time-sliced replicas of GPU 0: one holder
            pod("inference", "llm-serve-6d5f7c9b8d-q7wzx", "vllm", "nvidia.com/gpu", f"{gpu0}::0", f"{gpu0}::1"),
            # a training pod on GPU 1
            pod("ml-training", "llama-ft-x7k2p-worker-0", "pytorch", "nvidia.com/gpu", gpu1),
            # a device of another node: ignored
            pod("other", "elsewhere-0", "main", "nvidia.com/gpu", "GPU-00000000-0000-0000-0000-000000000000"),
        ]
    )
    path = serve(Kubelet(response))
    client = PodResourcesClient(path, timeout_s=5)
    sampler.holders = lambda: kubelet_holders(client.list_gpu_assignments, sampler.device_ids())
    rows = sampler.read().allocation_dicts()
    by_gpu = {r["gpu_uuid"]: r for r in rows}
    assert len(rows) == 3
    assert (by_gpu[gpu0]["pod"], by_gpu[gpu0]["workload"]) == ("llm-serve-6d5f7c9b8d-q7wzx", "llm-serve")
    # Without the owner reference (the kubelet does not give it) a PyTorchJob worker's workload is its pod name
    # without the StatefulSet-style ordinal.
    assert (by_gpu[gpu1]["pod"], by_gpu[gpu1]["workload"]) == ("llama-ft-x7k2p-worker-0", "llama-ft-x7k2p-worker")
    assert by_gpu[gpu0]["pid"] == by_gpu[gpu1]["pid"] == nvml.trace_row()["procs"][0]["pid"]
    assert by_gpu[gpu2]["pod"] is None and by_gpu[gpu2]["pid"] is not None  # a process no pod claims


def test_an_unreachable_kubelet_leaves_processes_unattributed(tmp_path: Path, fixtures: Path) -> None:
    sampler, _ = sampler_at_idle_context(fixtures, 1)
    client = PodResourcesClient(tmp_path / "missing.sock", timeout_s=1)
    sampler.holders = lambda: kubelet_holders(client.list_gpu_assignments, sampler.device_ids())
    [row] = sampler.read().allocation_dicts()
    assert row["pod"] is None and row["pid"] is not None
