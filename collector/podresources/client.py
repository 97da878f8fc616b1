"""The kubelet's pod-resources API v1 (``List``) on its unix socket: which GPUs (whole, MIG, time-sliced) the kubelet
assigned to each container on this node (no API server, no RBAC)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from collector.errors import CollectorError
from collector.podresources import api_pb2, api_pb2_grpc

DEFAULT_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The kubelet's own pod-resources clients accept 16 MiB; gRPC's default (4 MiB) is too small on a busy node."""

GPU_RESOURCES = ("nvidia.com/gpu", "nvidia.com/gpu.shared")
"""Whole GPUs; ``.shared`` is the name the NVIDIA device plugin gives time-sliced GPUs with ``renameByDefault``."""
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
"""MIG instances under the ``mixed`` strategy: ``nvidia.com/mig-1g.10gb``, ``nvidia.com/mig-3g.40gb.shared``, ..."""


class PodResourcesUnavailable(CollectorError):
    """The kubelet's pod-resources socket is missing, not a socket, not ours to open, or nobody answers on it."""

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__(
            f"kubelet pod-resources socket {socket_path} cannot be used ({reason}): mount the host's "
            "/var/lib/kubelet/pod-resources into the agent and run it as root or in the kubelet's group"
        )
        self.socket_path = socket_path


class PodResourcesRejected(CollectorError):
    """The kubelet answered, but not with a pod list (an old kubelet, the feature gated off, rate limited)."""

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__(
            f"kubelet pod-resources API at {socket_path} refused List ({reason}): it needs a kubelet serving "
            "podresources v1 (Kubernetes 1.20 or later); see the kubelet's log"
        )
        self.socket_path = socket_path


@dataclass(frozen=True)
class GpuAssignment:
    """One device the kubelet assigned to one container."""

    namespace: str
    pod: str
    container: str
    resource_name: str
    device_id: str
    """``GPU-<uuid>`` for a whole or time-sliced GPU (its ``::N`` suffix removed), ``MIG-<uuid>`` for a MIG instance
    (resolved to its parent GPU and instance id through NVML elsewhere)."""
    replica: int | None = None
    """The ``N`` of a time-sliced (or MPS) id ``<device>::N``; None for a device that is not shared."""
    claim: str | None = None
    """``namespace/name`` of the DRA ResourceClaim the device was allocated through; None for a device plugin's.
    A DRA device's ``device_id`` is its name in the driver's pool (``gpu-0``, ``gpu-0-mig-9-4-4`` for the NVIDIA
    driver), ``resource_name`` the driver (``gpu.nvidia.com``)."""
    pool: str | None = None
    """The DRA pool (for the NVIDIA driver, the node) the device was allocated from."""
    cdi_devices: tuple[str, ...] = ()
    """The fully qualified CDI device names the kubelet gave the container for a DRA device."""

    @property
    def is_mig(self) -> bool:
        return self.device_id.startswith("MIG-")


DRA_GPU_DRIVERS = ("gpu.nvidia.com",)
"""DRA drivers whose devices are GPUs or MIG devices (NVIDIA's k8s-dra-driver-gpu; dcgm-exporter's
``DRAGPUDriverName``). Other drivers' claims (network, IMEX channels: ``compute-domain.nvidia.com``) are not GPUs."""


def is_gpu_resource(resource_name: str) -> bool:
    return resource_name in GPU_RESOURCES or resource_name.startswith(MIG_RESOURCE_PREFIX)


def split_replica(device_id: str) -> tuple[str, int | None]:
    """``GPU-<uuid>::3`` -> (``GPU-<uuid>``, 3); an id without a numeric ``::N`` suffix comes back whole, with None."""
    base, sep, index = device_id.rpartition("::")
    if sep and base and index.isdigit():
        return base, int(index)
    return device_id, None


class PodResourcesClient:
    """The kubelet's pod-resources API v1 on its unix socket; one short-lived channel per call."""

    def __init__(self, socket_path: str | Path = DEFAULT_SOCKET, *, timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def list_gpu_assignments(self) -> list[GpuAssignment]:
        """Every GPU and MIG device held by a container on this node, one entry per device id, in the kubelet's order.

        Pods without GPU devices (CPU-only pods, other device plugins such as RDMA) contribute nothing.
        """
        assignments = []
        for pod in self._list().pod_resources:
            for container in pod.containers:
                for devices in container.devices:
                    if not is_gpu_resource(devices.resource_name):
                        continue
                    for raw_id in devices.device_ids:
                        device_id, replica = split_replica(raw_id)
                        assignments.append(
                            GpuAssignment(
                                pod.namespace, pod.name, container.name, devices.resource_name, device_id, replica
                            )
                        )
                assignments += _dra_assignments(pod, container)
        return assignments

    def _list(self) -> api_pb2.ListPodResourcesResponse:
        self._check_socket()
        target = f"unix://{self.socket_path.absolute()}"
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        with grpc.insecure_channel(target, options=options) as channel:
            stub = api_pb2_grpc.PodResourcesListerStub(channel)
            try:
                response: api_pb2.ListPodResourcesResponse = stub.List(
                    api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s
                )
            except grpc.RpcError as error:
                raise self._error(error) from None
        return response

    def _check_socket(self) -> None:
        """Say plainly what is wrong with the socket before gRPC buries it in 'failed to connect to all addresses'."""
        try:
            mode = self.socket_path.stat().st_mode
        except FileNotFoundError:
            raise PodResourcesUnavailable(self.socket_path, "no such file") from None
        except PermissionError:
            raise PodResourcesUnavailable(self.socket_path, "permission denied") from None
        if not stat.S_ISSOCK(mode):
            raise PodResourcesUnavailable(self.socket_path, "not a unix socket")
        if not os.access(self.socket_path, os.R_OK | os.W_OK):
            raise PodResourcesUnavailable(self.socket_path, "permission denied")

    def _error(self, error: grpc.RpcError) -> CollectorError:
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return PodResourcesUnavailable(self.socket_path, f"no answer within {self.timeout_s:g} s")
        if code == grpc.StatusCode.UNAVAILABLE:
            # "failed to connect to all addresses; last error: ... error: Connection refused" -> "Connection refused"
            _, sep, last = details.rpartition("error: ")
            return PodResourcesUnavailable(self.socket_path, last if sep and last else details)
        return PodResourcesRejected(self.socket_path, f"{code.name}: {details}")


def _dra_assignments(pod: api_pb2.PodResources, container: api_pb2.ContainerResources) -> list[GpuAssignment]:
    """The GPUs a container holds through DRA ResourceClaims (``dynamic_resources``, kubelet 1.27+): one per claimed
    device of a GPU driver, held by this container's pod, with the claim. A claim shared by several pods names each
    of them, as the kubelet lists it under each."""
    out = []
    for dynamic in container.dynamic_resources:
        claim = f"{dynamic.claim_namespace or pod.namespace}/{dynamic.claim_name}"
        for resource in dynamic.claim_resources:
            if resource.driver_name not in DRA_GPU_DRIVERS or not resource.device_name:
                continue
            cdi = tuple(d.name for d in resource.cdi_devices)
            out.append(
                GpuAssignment(
                    pod.namespace,
                    pod.name,
                    container.name,
                    resource.driver_name,
                    resource.device_name,
                    claim=claim,
                    pool=resource.pool_name or None,
                    cdi_devices=cdi,
                )
            )
    return out
