"""Kubernetes attribution on a node: which pod and container a GPU process, or a GPU, belongs to.

Two lookups, both local to the node (no API server, no RBAC):

* ``ProcCgroups(proc_root)``: a PID's pod UID and container id, read from ``/proc/<pid>/cgroup``. Handles cgroup v1
  and v2, the systemd and cgroupfs drivers, containerd, CRI-O and docker ids, every QoS class, and the relative paths
  (``/../../kubepods-...``) a reader in its own cgroup namespace sees for processes outside it.
* ``PodResourcesClient(socket_path)``: which GPUs (whole, MIG, time-sliced) the kubelet assigned to each container,
  from the kubelet's pod-resources API v1 (``List``) on its unix socket.

``workload_from_owner`` names the workload a pod belongs to, for the ``workload`` column of ``gpu_allocations``.
"""

from __future__ import annotations

import os
import re
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


# ---------------------------------------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class PodContainer:
    """Where a process runs: its pod's UID (always with dashes) and its container's id."""

    pod_uid: str
    container_id: str | None
    """64 hex digits; None for a process in the pod's cgroup but in no container's (e.g. CRI-O's conmon)."""
    runtime: str | None
    """``containerd``, ``cri-o`` or ``docker`` when the path says (systemd driver); None for cgroupfs paths."""


_UUID = r"[0-9a-f]{8}(?P<sep>[-_])[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{4}(?P=sep)[0-9a-f]{12}"
_POD_CGROUP = re.compile(rf"(?:[\w.-]*-)?pod(?P<uid>{_UUID}|[0-9a-f]{{32}})(?:\.slice)?")
"""``pod<uid>`` (cgroupfs) or ``kubepods[-<qos>]-pod<uid with _>.slice`` (systemd); static pods have 32-hex UIDs."""
_CONTAINER_CGROUP = re.compile(r"(?:(?P<prefix>cri-containerd|crio|docker)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?")
_RUNTIMES = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}


def parse_cgroup(text: str) -> PodContainer | None:
    """The pod and container named by the contents of a ``/proc/<pid>/cgroup`` file; None outside any pod.

    Every line (``hierarchy:controllers:path``; v2 has one, ``0::/...``, v1 one per controller) is tried in order and
    the first that names a pod wins. In a path, the pod is the ``pod<uid>`` component and the container the component
    right after it; anything below the container (cgroups a container makes for itself) is ignored.
    """
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and (found := _parse_path(fields[2])) is not None:
            return found
    return None


def _parse_path(path: str) -> PodContainer | None:
    parts = [part for part in path.split("/") if part]
    for i, part in enumerate(parts):
        pod = _POD_CGROUP.fullmatch(part)
        if pod is None:
            continue
        uid = pod["uid"].replace("_", "-")
        container = _CONTAINER_CGROUP.fullmatch(parts[i + 1]) if i + 1 < len(parts) else None
        if container is None:
            return PodContainer(uid, None, None)
        prefix = container["prefix"]
        return PodContainer(uid, container["id"], _RUNTIMES[prefix] if prefix else None)
    return None


class ProcCgroups:
    """PID -> pod and container, from ``<proc_root>/<pid>/cgroup``.

    On a node the agent needs ``hostPID: true`` to see other pods' processes; ``proc_root`` is injectable so tests
    hand it a fake ``/proc`` tree on disk.
    """

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc_root = Path(proc_root)

    def container_of(self, pid: int) -> PodContainer | None:
        """The pod and container ``pid`` runs in; None when it is not in a pod or has exited (a race, not an error)."""
        try:
            text = (self.proc_root / str(pid) / "cgroup").read_text()
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            return None
        return parse_cgroup(text)


# ------------------------------------------------------------------------------------------------- pod-resources


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

    @property
    def is_mig(self) -> bool:
        return self.device_id.startswith("MIG-")


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


# -------------------------------------------------------------------------------------------------------- workloads

_SAFE = "bcdfghjklmnpqrstvwxz2456789"
"""Kubernetes' alphabet for generated names (``rand.SafeEncodeString``): no vowels, so no words; no 0, 1 or 3."""
_POD_SUFFIX = re.compile(rf"(?P<base>.+)-[{_SAFE}]{{5}}")
"""``generateName``'s 5 random characters (Deployment, DaemonSet and Job pods)."""
_TEMPLATE_HASH = re.compile(rf"(?P<base>.+)-[{_SAFE}]{{6,10}}")
"""A ReplicaSet's ``pod-template-hash`` (a 32-bit hash's decimal digits, each mapped into the safe alphabet)."""
_CRON_RUN = re.compile(r"(?P<base>.+)-\d{8,}")
"""A CronJob's Job: ``<cronjob>-<scheduled time in minutes since the epoch>``."""
_ORDINAL = re.compile(r"(?P<base>.+)-(?:0|[1-9]\d{0,4})")
"""A StatefulSet's pod: ``<statefulset>-<ordinal>``."""


def workload_from_owner(owner_kind: str | None, owner_name: str | None, pod_name: str) -> str:
    """The workload a pod belongs to: its owner when known, else the pod's name without its generated suffixes.

    With an owner: a ReplicaSet gives its Deployment (``trainer-7d9f8b6c5d`` -> ``trainer``); a Job made by a
    CronJob gives the CronJob (``backup-28934567`` -> ``backup``), so every run is one workload; a static pod
    (owner ``Node``) loses its ``-<node>`` suffix; any other owner (StatefulSet, DaemonSet, Job, a custom resource
    such as a PyTorchJob) is the workload as named.

    From the pod name alone: ``name-<template hash>-<5>`` (Deployment) and ``name-<5>`` (DaemonSet, Job) and
    ``name-<minutes>-<5>`` (CronJob) and ``name-<ordinal>`` (StatefulSet) all give ``name``; a name with no generated
    suffix (a bare pod) is its own workload.
    """
    if owner_kind and owner_name:
        if owner_kind == "ReplicaSet":
            return _strip(_TEMPLATE_HASH, owner_name)
        if owner_kind == "Job":
            return _strip(_CRON_RUN, owner_name)
        if owner_kind == "Node":
            return pod_name.removesuffix(f"-{owner_name}")
        return owner_name
    return workload_from_pod(pod_name)


def workload_from_pod(pod_name: str) -> str:
    """The workload of a pod whose owner is unknown: its name without the suffixes Kubernetes generated.

    ``name-<template hash>-<5>`` (Deployment), ``name-<minutes>-<5>`` (CronJob), ``name-<5>`` (DaemonSet, Job) and
    ``name-<ordinal>`` (StatefulSet) give ``name``; generated parts use an alphabet without vowels, so ordinary
    words are not mistaken for them; a bare pod is its own workload.
    """
    if (generated := _POD_SUFFIX.fullmatch(pod_name)) is not None:
        base = generated["base"]
        for parent in (_CRON_RUN, _TEMPLATE_HASH):
            if (match := parent.fullmatch(base)) is not None:
                return match["base"]
        return base
    return _strip(_ORDINAL, pod_name)


def _strip(pattern: re.Pattern[str], name: str) -> str:
    match = pattern.fullmatch(name)
    return match["base"] if match is not None else name
