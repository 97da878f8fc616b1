"""The kubelet's pod-resources API: a real gRPC kubelet server on a unix socket."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.podresources import api_pb2, api_pb2_grpc
from collector.podresources.client import (
    GpuAssignment,
    PodResourcesClient,
    PodResourcesRejected,
    PodResourcesUnavailable,
    split_replica,
)
from tests.kubelet import Kubelet

FIX = "mount the host's /var/lib/kubelet/pod-resources into the agent and run it as root or in the kubelet's group"


GPU = [f"GPU-{n}c1e4d2a-7b3f-9e8d-5a6c-0f1e2d3c4b5a" for n in range(8)]
MIG_3G = "MIG-6b7c1b2e-5f3a-5c8d-9e0f-1a2b3c4d5e6f"
MIG_1G = "MIG-0a9b8c7d-6e5f-5a4b-8c3d-2e1f0a9b8c7d"


def _numa(node: int) -> api_pb2.TopologyInfo:
    return api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=node)])


NODE_PODS = api_pb2.ListPodResourcesResponse(
    pod_resources=[
        # A PyTorchJob worker holding four whole GPUs and the NVIDIA network operator's shared RDMA device.
        api_pb2.PodResources(
            name="llama-ft-worker-0",
            namespace="ml-training",
            containers=[
                api_pb2.ContainerResources(
                    name="pytorch",
                    devices=[
                        api_pb2.ContainerDevices(
                            resource_name="nvidia.com/gpu", device_ids=GPU[0:4], topology=_numa(0)
                        ),
                        api_pb2.ContainerDevices(
                            resource_name="nvidia.com/rdma_shared_device_a", device_ids=["rdma_shared_device_a-0"]
                        ),
                    ],
                    cpu_ids=[2, 3, 4, 5, 66, 67, 68, 69],
                    memory=[api_pb2.ContainerMemory(memory_type="memory", size=64 << 30, topology=_numa(0))],
                ),
                api_pb2.ContainerResources(name="log-shipper"),
            ],
        ),
        # A notebook on MIG instances (mixed strategy): a 3g.40gb for the kernel, a 1g.10gb for an embedding sidecar.
        api_pb2.PodResources(
            name="jupyter-alice-0",
            namespace="research",
            containers=[
                api_pb2.ContainerResources(
                    name="notebook",
                    devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/mig-3g.40gb", device_ids=[MIG_3G])],
                ),
                api_pb2.ContainerResources(
                    name="embedder",
                    devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/mig-1g.10gb", device_ids=[MIG_1G])],
                ),
            ],
        ),
        # Time-sliced inference: two replicas of one GPU, then a pod on the renamed (.shared) resource.
        api_pb2.PodResources(
            name="llm-serve-6d5f7c9b8d-q7wzx",
            namespace="inference",
            containers=[
                api_pb2.ContainerResources(
                    name="vllm",
                    devices=[
                        api_pb2.ContainerDevices(
                            resource_name="nvidia.com/gpu", device_ids=[f"{GPU[5]}::0", f"{GPU[5]}::1"]
                        )
                    ],
                ),
            ],
        ),
        api_pb2.PodResources(
            name="reranker-5b8c9d7f6-m4n2p",
            namespace="inference",
            containers=[
                api_pb2.ContainerResources(
                    name="server",
                    devices=[
                        api_pb2.ContainerDevices(resource_name="nvidia.com/gpu.shared", device_ids=[f"{GPU[6]}::3"])
                    ],
                ),
            ],
        ),
        # CPU-only pods: no devices at all, or CPUs pinned by the static CPU manager.
        api_pb2.PodResources(
            name="coredns-7db6d8ff4d-lx9kq",
            namespace="kube-system",
            containers=[api_pb2.ContainerResources(name="coredns")],
        ),
        api_pb2.PodResources(
            name="etl-28934567-b9wzt",
            namespace="data",
            containers=[api_pb2.ContainerResources(name="spark", cpu_ids=[10, 11])],
        ),
    ]
)

EXPECTED = [
    GpuAssignment("ml-training", "llama-ft-worker-0", "pytorch", "nvidia.com/gpu", GPU[0]),
    GpuAssignment("ml-training", "llama-ft-worker-0", "pytorch", "nvidia.com/gpu", GPU[1]),
    GpuAssignment("ml-training", "llama-ft-worker-0", "pytorch", "nvidia.com/gpu", GPU[2]),
    GpuAssignment("ml-training", "llama-ft-worker-0", "pytorch", "nvidia.com/gpu", GPU[3]),
    GpuAssignment("research", "jupyter-alice-0", "notebook", "nvidia.com/mig-3g.40gb", MIG_3G),
    GpuAssignment("research", "jupyter-alice-0", "embedder", "nvidia.com/mig-1g.10gb", MIG_1G),
    GpuAssignment("inference", "llm-serve-6d5f7c9b8d-q7wzx", "vllm", "nvidia.com/gpu", GPU[5], replica=0),
    GpuAssignment("inference", "llm-serve-6d5f7c9b8d-q7wzx", "vllm", "nvidia.com/gpu", GPU[5], replica=1),
    GpuAssignment("inference", "reranker-5b8c9d7f6-m4n2p", "server", "nvidia.com/gpu.shared", GPU[6], replica=3),
]


def test_list_gpu_assignments_from_a_real_kubelet_socket(serve: Callable[..., Path]) -> None:
    path = serve(Kubelet(NODE_PODS))
    assert PodResourcesClient(path, timeout_s=5).list_gpu_assignments() == EXPECTED


def test_assignments_say_which_are_mig() -> None:
    assert [a.is_mig for a in EXPECTED if a.pod == "jupyter-alice-0"] == [True, True]
    assert not any(a.is_mig for a in EXPECTED if a.pod != "jupyter-alice-0")


def test_a_node_without_pods_has_no_assignments(serve: Callable[..., Path]) -> None:
    path = serve(Kubelet(api_pb2.ListPodResourcesResponse()))
    assert PodResourcesClient(path, timeout_s=5).list_gpu_assignments() == []


@pytest.mark.parametrize(
    ("device_id", "expected"),
    [
        (f"{GPU[0]}::3", (GPU[0], 3)),
        (f"{GPU[0]}::0", (GPU[0], 0)),
        (f"{MIG_1G}::1", (MIG_1G, 1)),
        (GPU[0], (GPU[0], None)),
        (MIG_3G, (MIG_3G, None)),
        ("0", ("0", None)),
        (f"{GPU[0]}::", (f"{GPU[0]}::", None)),
    ],
)
def test_split_replica(device_id: str, expected: tuple[str, int | None]) -> None:
    assert split_replica(device_id) == expected


def test_missing_socket_is_one_line_naming_the_socket_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "pod-resources" / "kubelet.sock"
    with pytest.raises(PodResourcesUnavailable) as caught:
        PodResourcesClient(path, timeout_s=1).list_gpu_assignments()
    assert str(caught.value) == f"kubelet pod-resources socket {path} cannot be used (no such file): {FIX}"


def test_a_regular_file_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.sock"
    path.write_text("")
    with pytest.raises(PodResourcesUnavailable) as caught:
        PodResourcesClient(path, timeout_s=1).list_gpu_assignments()
    assert str(caught.value) == f"kubelet pod-resources socket {path} cannot be used (not a unix socket): {FIX}"


def test_a_socket_nobody_listens_on(socket_dir: Path) -> None:
    path = socket_dir / "kubelet.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a kubelet crash
    with pytest.raises(PodResourcesUnavailable) as caught:
        PodResourcesClient(path, timeout_s=2).list_gpu_assignments()
    assert str(caught.value) == f"kubelet pod-resources socket {path} cannot be used (Connection refused): {FIX}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may open any socket")
def test_a_socket_we_may_not_open(serve: Callable[..., Path]) -> None:
    path = serve(Kubelet(NODE_PODS))
    path.chmod(0o000)  # as the kubelet's socket (root's, 0755 or 0700) looks to anyone else
    with pytest.raises(PodResourcesUnavailable) as caught:
        PodResourcesClient(path, timeout_s=1).list_gpu_assignments()
    assert str(caught.value) == f"kubelet pod-resources socket {path} cannot be used (permission denied): {FIX}"


def test_a_kubelet_without_list(serve: Callable[..., Path]) -> None:
    path = serve(api_pb2_grpc.PodResourcesListerServicer())
    with pytest.raises(PodResourcesRejected) as caught:
        PodResourcesClient(path, timeout_s=5).list_gpu_assignments()
    assert str(caught.value) == (
        f"kubelet pod-resources API at {path} refused List (UNIMPLEMENTED: Method not implemented!): "
        "it needs a kubelet serving podresources v1 (Kubernetes 1.20 or later); see the kubelet's log"
    )


def test_a_kubelet_that_does_not_answer_in_time(serve: Callable[..., Path]) -> None:
    release = threading.Event()
    path = serve(Kubelet(NODE_PODS, release))
    try:
        with pytest.raises(PodResourcesUnavailable) as caught:
            PodResourcesClient(path, timeout_s=0.2).list_gpu_assignments()
    finally:
        release.set()
    assert str(caught.value) == f"kubelet pod-resources socket {path} cannot be used (no answer within 0.2 s): {FIX}"
