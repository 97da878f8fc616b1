"""Pod attribution: real /proc/<pid>/cgroup files on disk, a real gRPC kubelet pod-resources server on a unix socket."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from collector.k8s import (
    GpuAssignment,
    PodContainer,
    PodResourcesClient,
    PodResourcesRejected,
    PodResourcesUnavailable,
    ProcCgroups,
    split_replica,
    workload_from_owner,
)
from collector.podresources import api_pb2, api_pb2_grpc
from tests.kubelet import Kubelet

UID = "1f7c3e2a-8b5d-4c1e-9a3f-2d6b7e8c9f01"
UID_ = UID.replace("-", "_")
CID = "3b8f2c6a9d1e4f7a0b5c8d2e6f9a1b4c7d0e3f6a9b2c5d8e1f4a7b0c3d6e9f2a"
assert len(CID) == 64

FIX = "mount the host's /var/lib/kubelet/pod-resources into the agent and run it as root or in the kubelet's group"

# ------------------------------------------------------------------------------------------------------- cgroups

V1_CGROUPFS_DOCKER = f"""\
12:rdma:/
11:memory:/kubepods/besteffort/pod{UID}/{CID}
10:hugetlb:/kubepods/besteffort/pod{UID}/{CID}
9:cpuset:/kubepods/besteffort/pod{UID}/{CID}
8:pids:/kubepods/besteffort/pod{UID}/{CID}
7:devices:/kubepods/besteffort/pod{UID}/{CID}
6:net_cls,net_prio:/kubepods/besteffort/pod{UID}/{CID}
5:blkio:/kubepods/besteffort/pod{UID}/{CID}
4:freezer:/kubepods/besteffort/pod{UID}/{CID}
3:perf_event:/kubepods/besteffort/pod{UID}/{CID}
2:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{CID}
1:name=systemd:/kubepods/besteffort/pod{UID}/{CID}
0::/
"""

_V1_SYSTEMD_PATH = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{CID}.scope"
V1_SYSTEMD_DOCKER = f"""\
12:misc:/
11:cpu,cpuacct:{_V1_SYSTEMD_PATH}
10:memory:{_V1_SYSTEMD_PATH}
9:devices:{_V1_SYSTEMD_PATH}
8:pids:{_V1_SYSTEMD_PATH}
7:blkio:{_V1_SYSTEMD_PATH}
6:cpuset:{_V1_SYSTEMD_PATH}
5:freezer:{_V1_SYSTEMD_PATH}
4:net_cls,net_prio:{_V1_SYSTEMD_PATH}
3:hugetlb:{_V1_SYSTEMD_PATH}
2:perf_event:{_V1_SYSTEMD_PATH}
1:name=systemd:{_V1_SYSTEMD_PATH}
0::/system.slice/containerd.service
"""

CGROUPS = {
    "v2-systemd-containerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-systemd-crio": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope\n",
        PodContainer(UID, CID, "cri-o"),
    ),
    "v2-cgroupfs": (f"0::/kubepods/burstable/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    "v1-cgroupfs-docker": (V1_CGROUPFS_DOCKER, PodContainer(UID, CID, None)),
    "v1-systemd-docker": (V1_SYSTEMD_DOCKER, PodContainer(UID, CID, "docker")),
    "v2-systemd-guaranteed": (
        f"0::/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-cgroupfs-guaranteed": (f"0::/kubepods/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    # What a reader in its own cgroup namespace (the agent's pod on cgroup v2) sees for a process outside it.
    "v2-cgroupns-relative": (
        f"0::/../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-cgroupfs-cgroupns-relative": (f"0::/../../../besteffort/pod{UID}/{CID}\n", PodContainer(UID, CID, None)),
    # kind and minikube nodes put the kubelet's cgroups under a --cgroup-root.
    "v2-kubelet-cgroup-root": (
        f"0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID, "containerd"),
    ),
    "v2-nested-below-container": (
        f"0::/kubepods/burstable/pod{UID}/{CID}/init.scope\n",
        PodContainer(UID, CID, None),
    ),
    "v2-static-pod-md5-uid": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod8f3a0b1d2c4e5f6a7b8c9d0e1f2a3b4c.slice/"
        f"cri-containerd-{CID}.scope\n",
        PodContainer("8f3a0b1d2c4e5f6a7b8c9d0e1f2a3b4c", CID, "containerd"),
    ),
    "v2-crio-conmon": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{CID}.scope\n",
        PodContainer(UID, None, None),
    ),
    "v2-user-session": ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
    "v2-system-service": ("0::/system.slice/containerd.service\n", None),
    "v2-podman-pod": (f"0::/machine.slice/libpod_pod_{CID}.slice/libpod-{CID}.scope\n", None),
}


def write_cgroup(proc: Path, pid: int, text: str) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(text)


@pytest.mark.parametrize("name", list(CGROUPS))
def test_container_of_reads_the_pids_cgroup_file(tmp_path: Path, name: str) -> None:
    text, expected = CGROUPS[name]
    write_cgroup(tmp_path / "proc", 4242, text)
    assert ProcCgroups(proc_root=tmp_path / "proc").container_of(4242) == expected


def test_systemd_slice_uids_come_back_with_dashes(tmp_path: Path) -> None:
    write_cgroup(tmp_path, 7, CGROUPS["v2-systemd-containerd"][0])
    found = ProcCgroups(tmp_path).container_of(7)
    assert found is not None
    assert found.pod_uid == UID
    assert "_" not in found.pod_uid


def test_exited_process_is_none_not_an_error(tmp_path: Path) -> None:
    write_cgroup(tmp_path, 1, CGROUPS["v2-cgroupfs"][0])
    assert ProcCgroups(tmp_path).container_of(999_999) is None


# ------------------------------------------------------------------------------------------------- pod-resources

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


# ------------------------------------------------------------------------------------------------------ workloads


@pytest.mark.parametrize(
    ("owner_kind", "owner_name", "pod", "workload"),
    [
        # The owner reference, when known.
        ("ReplicaSet", "trainer-7d9f8b6c5d", "trainer-7d9f8b6c5d-x2k4q", "trainer"),
        ("ReplicaSet", "llm-serve-6d5f7c9b8d", "llm-serve-6d5f7c9b8d-q7wzx", "llm-serve"),
        ("ReplicaSet", "sd-xl-api-54f9c8b7d6", "sd-xl-api-54f9c8b7d6-7hw2n", "sd-xl-api"),
        ("ReplicaSet", "frontend", "frontend-x2k4q", "frontend"),  # a ReplicaSet without a Deployment
        ("StatefulSet", "jupyter-alice", "jupyter-alice-0", "jupyter-alice"),
        ("StatefulSet", "redis-shard-2", "redis-shard-2-1", "redis-shard-2"),
        ("Job", "bert-finetune", "bert-finetune-7kq2x", "bert-finetune"),
        ("Job", "nightly-eval-28934567", "nightly-eval-28934567-b9wzt", "nightly-eval"),  # a CronJob's run
        ("DaemonSet", "nvidia-dcgm-exporter", "nvidia-dcgm-exporter-5nq8x", "nvidia-dcgm-exporter"),
        ("PyTorchJob", "llama-ft", "llama-ft-worker-0", "llama-ft"),
        ("Node", "gpu-node-a1", "etcd-gpu-node-a1", "etcd"),  # a static pod's mirror
        # The pod name alone.
        (None, None, "trainer-7d9f8b6c5d-x2k4q", "trainer"),
        (None, None, "llm-serve-6d5f7c9b8d-q7wzx", "llm-serve"),
        (None, None, "jupyter-alice-0", "jupyter-alice"),
        (None, None, "redis-shard-2-1", "redis-shard-2"),
        (None, None, "bert-finetune-7kq2x", "bert-finetune"),
        (None, None, "nightly-eval-28934567-b9wzt", "nightly-eval"),
        (None, None, "nvidia-dcgm-exporter-5nq8x", "nvidia-dcgm-exporter"),
        (None, None, "cuda-vectoradd", "cuda-vectoradd"),
        (None, None, "triton-server", "triton-server"),
        ("", "", "llama-70b", "llama-70b"),
    ],
)
def test_workload_from_owner(owner_kind: str | None, owner_name: str | None, pod: str, workload: str) -> None:
    assert workload_from_owner(owner_kind, owner_name, pod) == workload
