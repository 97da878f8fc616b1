"""A real Prometheus for tests: OpenMetrics history backfilled with ``promtool``, served by the ``prometheus`` binary.

The history (:func:`make_history`) is a small cluster as Prometheus would hold it after scraping dcgm-exporter and
kube-state-metrics, with the label sets of the real captures in ``tests/fixtures/dcgm-exporter/``:

- ``gpu-node-1``: three H100s, released-image labels (``Hostname``), scraped with ``honorLabels``: GPU 0 is held by
  ``team-a/trainer-7d9f8b6c5d-x2k4q`` (a Deployment's pod); GPU 1 carries only the exporter's own pod labels, and the
  StatefulSet pod ``research/notebook-0`` requests one GPU there from the middle of the history on; GPU 2 is held by
  ``research/llama-ft-worker-0``, a pod of the PyTorchJob ``llama-ft`` (a custom resource).
- ``ip-10-0-1-23.ec2.internal``: an A100 in MIG mode (two ``1g.5gb`` instances, ``GPU_I_PROFILE``/``GPU_I_ID``) and
  a whole A100, main-branch labels (``hostname``), scraped through a ServiceMonitor without ``honorLabels`` (the
  holder is ``exported_pod``; ``pod`` is the exporter). Instance 13 is held by ``ml/infer-5f7c9d8b4-kx2qz``; instance
  14 has no pod label, but the CronJob pod ``ml/batch-eval-28931460-q7x2z`` is the only other running pod requesting
  a ``1g.5gb`` there. A finished Job pod still requests a whole GPU there (it must not count).

Owners climb as kube-state-metrics reports them: ``kube_replicaset_owner`` gives each ReplicaSet its Deployment and
``kube_job_owner`` the CronJob ``batch-eval`` its Job (the finished ``old-job`` has none, ``<none>``).
- ``gke-cpu-pool-1``: a GKE spot node with no GPU.

Every node has its ``kube_node_info`` with the ``provider_id`` its cloud sets (:data:`PROVIDER_IDS`: EC2
``aws:///<zone>/<instance id>``, GCE ``gce://<project>/<zone>/<instance name>``).

Values are exact binary fractions, so what the warehouse holds can be compared for equality.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from collector.dcgm import DcgmPoint

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
INSTALL_HINT = "the prometheus and promtool binaries are not installed (apt-get install prometheus)"
STEP_S = 60
HOURS = 4
ENDS_BEFORE_NOW_S = 15 * 60

NODE_A = "gpu-node-1"
NODE_B = "ip-10-0-1-23.ec2.internal"
NODE_CPU = "gke-cpu-pool-1"
H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
UUID_A0 = "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"
UUID_A1 = "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a"
UUID_A2 = "GPU-7f2e9a41-3c8d-4b6e-a1f0-5d9c2e8b7a13"
UUID_B0 = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
UUID_B1 = "GPU-5c1f0e6a-2b8d-4c3e-9f7a-8e2d1b0c4a6f"
PROVIDER_IDS = {
    NODE_A: "aws:///us-east-1a/i-0abc1234def567890",
    NODE_B: "aws:///us-west-2b/i-0f3c5a7e9b1d24680",
    NODE_CPU: "gce://ml-platform-prod/europe-west4-a/gke-cpu-pool-1",
}
"""Each node's ``spec.providerID``, as kube-state-metrics' ``kube_node_info`` carries it."""


def require_binaries() -> tuple[str, str]:
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip(INSTALL_HINT)
    return PROMETHEUS, PROMTOOL


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ----------------------------------------------------------------------------------------------------- the history


@dataclass
class FixtureSeries:
    name: str
    labels: dict[str, str]
    values: dict[int, float] = field(default_factory=dict)
    """epoch seconds -> value"""


@dataclass(frozen=True)
class Holding:
    """Who holds a GPU (or MIG instance) from ``since`` on, as the test expects to find it in gpu_allocations."""

    node: str
    gpu_uuid: str
    mig_instance_id: int | None
    namespace: str
    pod: str
    container: str
    workload: str
    since: int
    owner_kind: str | None = None
    owner_name: str | None = None
    owner_chain: str | None = None
    cpu_request: float | None = None
    memory_request_bytes: int | None = None


@dataclass(frozen=True)
class History:
    start: int
    """First sample (epoch seconds, on the step grid)."""
    end: int
    """Last sample (inclusive)."""
    step_s: int
    series: list[FixtureSeries]
    holdings: list[Holding]

    @property
    def times(self) -> range:
        return range(self.start, self.end + 1, self.step_s)

    @property
    def start_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.start, dt.UTC)

    @property
    def end_dt(self) -> dt.datetime:
        """The exclusive end of a window holding every sample."""
        return dt.datetime.fromtimestamp(self.end + self.step_s, dt.UTC)

    def dcgm_points(self, start: int | None = None, end: int | None = None) -> list[DcgmPoint]:
        """Every DCGM sample in [start, end) as the scraper should see it (labels without ``__name__``)."""
        low, high = start or self.start, end or self.end + 1
        return [
            DcgmPoint(s.name, s.labels, dt.datetime.fromtimestamp(t, dt.UTC), v)
            for s in self.series
            if s.name.startswith("DCGM_")
            for t, v in s.values.items()
            if low <= t < high
        ]

    def write_openmetrics(self, path: Path) -> None:
        """OpenMetrics text: every family's samples together under its ``# TYPE``, seconds, a final ``# EOF``."""
        families: dict[str, list[FixtureSeries]] = {}
        for s in self.series:
            families.setdefault(s.name, []).append(s)
        with path.open("w") as out:
            for name, members in families.items():
                out.write(f"# TYPE {name} gauge\n")
                for s in members:
                    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                    for t, v in sorted(s.values.items()):
                        out.write(f"{name}{{{labels}}} {v!r} {t}\n")
            out.write("# EOF\n")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def make_history(end: int, *, hours: int = HOURS, step_s: int = STEP_S) -> History:
    start = end - hours * 3600 + step_s
    times = list(range(start, end + 1, step_s))
    middle = times[len(times) // 2]
    series: list[FixtureSeries] = []
    series += _dcgm_node_a(times)
    series += _dcgm_node_b(times)
    series += _kube_state(times, middle)
    holdings = [
        Holding(
            NODE_A,
            UUID_A0,
            None,
            "team-a",
            "trainer-7d9f8b6c5d-x2k4q",
            "main",
            "trainer",
            start,
            "Deployment",
            "trainer",
            "Pod<-ReplicaSet/trainer-7d9f8b6c5d<-Deployment/trainer",
            4.25,
            16 * 2**30 + 256 * 2**20,
        ),
        Holding(
            NODE_A,
            UUID_A1,
            None,
            "research",
            "notebook-0",
            "jupyter",
            "notebook",
            middle,
            "StatefulSet",
            "notebook",
            "Pod<-StatefulSet/notebook",
            4.0,
            None,
        ),
        Holding(
            NODE_A,
            UUID_A2,
            None,
            "research",
            "llama-ft-worker-0",
            "pytorch",
            "llama-ft",
            start,
            "PyTorchJob",
            "llama-ft",
            "Pod<-PyTorchJob/llama-ft",
        ),
        Holding(
            NODE_B,
            UUID_B0,
            13,
            "ml",
            "infer-5f7c9d8b4-kx2qz",
            "server",
            "infer",
            start,
            "Deployment",
            "infer",
            "Pod<-ReplicaSet/infer-5f7c9d8b4<-Deployment/infer",
            2.5,
            8_000_000_000,
        ),
        Holding(
            NODE_B,
            UUID_B0,
            14,
            "ml",
            "batch-eval-28931460-q7x2z",
            "eval",
            "batch-eval",
            start,
            "CronJob",
            "batch-eval",
            "Pod<-Job/batch-eval-28931460<-CronJob/batch-eval",
            1.0,
            2 * 2**30,
        ),
    ]
    return History(start, end, step_s, series, holdings)


def _gauges(names: tuple[str, ...], labels: dict[str, str], times: list[int], g: int) -> list[FixtureSeries]:
    out = []
    for name in names:
        s = FixtureSeries(name, labels)
        for i, t in enumerate(times):
            s.values[t] = _value(name, i, g)
        out.append(s)
    return out


FB_TOTAL_MIB = {H100: 81559, A100: 40960, "1g.5gb": 4864}


def _value(name: str, i: int, g: int) -> float:
    """A deterministic, exactly representable value of metric ``name`` at step ``i`` of GPU ``g``."""
    total = FB_TOTAL_MIB[{0: H100, 1: H100, 2: A100, 3: A100}.get(g, "1g.5gb")]
    used = 1000 + (i * 37 + g * 11) % 3000
    values = {
        "DCGM_FI_DEV_GPU_UTIL": float((i * 7 + g * 13) % 101),
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": ((i + g) % 5) / 4,
        "DCGM_FI_PROF_SM_ACTIVE": ((i + g) % 5) / 8,
        "DCGM_FI_DEV_FB_USED": float(used),
        "DCGM_FI_DEV_FB_RESERVED": 512.0,
        "DCGM_FI_DEV_FB_FREE": float(total - used - (512 if g < 4 else 0)),
        "DCGM_FI_DEV_POWER_USAGE": 60 + (i % 50) * 4.125 + g,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": float(10**9 * (g + 1) + i * 6_000_000),
        "DCGM_FI_DEV_GPU_TEMP": float(30 + (i + g) % 20),
        "DCGM_FI_DEV_SM_CLOCK": float(1200 + (i % 10) * 15),
    }
    return values[name]


ALL_DCGM = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
)
DEVICE_LEVEL = (
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
)
INSTANCE_LEVEL = (
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_SM_ACTIVE",
)


def _dcgm_node_a(times: list[int]) -> list[FixtureSeries]:
    """Released dcgm-exporter (``Hostname``), honorLabels: a held GPU carries its pod, a free one the exporter's."""

    def gpu(index: int, uuid: str, bus: str, pod: dict[str, str]) -> dict[str, str]:
        return {
            "gpu": str(index),
            "UUID": uuid,
            "pci_bus_id": bus,
            "device": f"nvidia{index}",
            "modelName": H100,
            "Hostname": NODE_A,
            "DCGM_FI_DRIVER_VERSION": "580.105.08",
            **pod,
            "instance": "10.0.172.246:9400",
            "job": "nvidia-dcgm-exporter",
        }

    held = {"container": "main", "namespace": "team-a", "pod": "trainer-7d9f8b6c5d-x2k4q", "pod_uid": ""}
    crd = {"container": "pytorch", "namespace": "research", "pod": "llama-ft-worker-0", "pod_uid": ""}
    exporter = {"container": "nvidia-dcgm-exporter", "namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-wqqqn"}
    return [
        *_gauges(ALL_DCGM, gpu(0, UUID_A0, "00000000:53:00.0", held), times, 0),
        *_gauges(ALL_DCGM, gpu(1, UUID_A1, "00000000:64:00.0", exporter), times, 1),
        *_gauges(ALL_DCGM, gpu(2, UUID_A2, "00000000:75:00.0", crd), times, 4),
    ]


def _dcgm_node_b(times: list[int]) -> list[FixtureSeries]:
    """Main-branch dcgm-exporter (``hostname``) through a ServiceMonitor without honorLabels: the holder is
    ``exported_*``, the plain ``pod`` is the exporter. GPU 0 is in MIG mode."""
    target = {
        "container": "nvidia-dcgm-exporter",
        "endpoint": "gpu-metrics",
        "instance": "10.0.1.23:9400",
        "job": "nvidia-dcgm-exporter",
        "namespace": "gpu-operator",
        "pod": "nvidia-dcgm-exporter-7xk2p",
        "service": "nvidia-dcgm-exporter",
    }

    def gpu(index: int, uuid: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        labels = {"gpu": str(index), "UUID": uuid, "device": f"nvidia{index}", "modelName": A100, "hostname": NODE_B}
        return {**labels, **(extra or {}), **target}

    held = {"exported_container": "server", "exported_namespace": "ml", "exported_pod": "infer-5f7c9d8b4-kx2qz"}
    mig13 = {"GPU_I_PROFILE": "1g.5gb", "GPU_I_ID": "13", **held}
    mig14 = {"GPU_I_PROFILE": "1g.5gb", "GPU_I_ID": "14"}
    return [
        *_gauges(DEVICE_LEVEL, gpu(0, UUID_B0), times, 2),
        *_gauges(INSTANCE_LEVEL, gpu(0, UUID_B0, mig13), times, 13),
        *_gauges(INSTANCE_LEVEL, gpu(0, UUID_B0, mig14), times, 14),
        *_gauges(ALL_DCGM, gpu(1, UUID_B1), times, 3),
    ]


def _constant(name: str, labels: dict[str, str], times: list[int], value: float = 1.0) -> FixtureSeries:
    return FixtureSeries(
        name, {**labels, "instance": "10.0.3.4:8080", "job": "kube-state-metrics"}, dict.fromkeys(times, value)
    )


CPU_MEMORY: dict[str, dict[str, tuple[float | None, float | None]]] = {
    # pod -> container -> (cpu cores, memory bytes) requested; llama-ft-worker-0 has no request series at all
    "trainer-7d9f8b6c5d-x2k4q": {"main": (4, 16 * 2**30), "log-shipper": (0.25, 256 * 2**20)},
    "notebook-0": {"jupyter": (4, None)},
    "infer-5f7c9d8b4-kx2qz": {"server": (2.5, 8e9)},
    "batch-eval-28931460-q7x2z": {"eval": (1, 2 * 2**30)},
    "old-job-tx6vq": {"main": (4, 2**30)},
}


def _kube_state(times: list[int], middle: int) -> list[FixtureSeries]:
    later = [t for t in times if t >= middle]
    nodes = [
        {
            "node": NODE_A,
            "label_node_kubernetes_io_instance_type": "p5.48xlarge",
            "label_karpenter_sh_capacity_type": "spot",
            "label_topology_kubernetes_io_region": "us-east-1",
            "label_topology_kubernetes_io_zone": "us-east-1a",
            "label_nvidia_com_gpu_product": "NVIDIA-H100-80GB-HBM3",
        },
        {
            "node": NODE_B,
            "label_node_kubernetes_io_instance_type": "p4d.24xlarge",
            "label_eks_amazonaws_com_capacity_type": "ON_DEMAND",
            "label_topology_kubernetes_io_region": "us-west-2",
            "label_topology_kubernetes_io_zone": "us-west-2b",
            "label_nvidia_com_gpu_product": "NVIDIA-A100-SXM4-40GB",
            "label_nvidia_com_gpu_count": "2",
            "label_nvidia_com_mig_strategy": "mixed",
        },
        {
            "node": NODE_CPU,
            "label_node_kubernetes_io_instance_type": "e2-standard-8",
            "label_cloud_google_com_gke_nodepool": "cpu-pool",
            "label_cloud_google_com_gke_spot": "true",
            "label_topology_kubernetes_io_region": "europe-west4",
            "label_topology_kubernetes_io_zone": "europe-west4-a",
        },
    ]
    pods = [
        # namespace, pod, container, node, resource, owner kind, owner name, phase, times
        ("team-a", "trainer-7d9f8b6c5d-x2k4q", "main", NODE_A, "nvidia_com_gpu", "ReplicaSet", "trainer-7d9f8b6c5d"),
        ("research", "notebook-0", "jupyter", NODE_A, "nvidia_com_gpu", "StatefulSet", "notebook"),
        ("ml", "infer-5f7c9d8b4-kx2qz", "server", NODE_B, "nvidia_com_mig_1g_5gb", "ReplicaSet", "infer-5f7c9d8b4"),
        ("ml", "batch-eval-28931460-q7x2z", "eval", NODE_B, "nvidia_com_mig_1g_5gb", "Job", "batch-eval-28931460"),
        ("ml", "old-job-tx6vq", "main", NODE_B, "nvidia_com_gpu", "Job", "old-job"),
        ("research", "llama-ft-worker-0", "pytorch", NODE_A, "nvidia_com_gpu", "PyTorchJob", "llama-ft"),
    ]
    parents = [
        # metric, object label, namespace, object, owner kind, owner name
        ("kube_replicaset_owner", "replicaset", "team-a", "trainer-7d9f8b6c5d", "Deployment", "trainer"),
        ("kube_replicaset_owner", "replicaset", "ml", "infer-5f7c9d8b4", "Deployment", "infer"),
        ("kube_job_owner", "job_name", "ml", "batch-eval-28931460", "CronJob", "batch-eval"),
        ("kube_job_owner", "job_name", "ml", "old-job", "<none>", "<none>"),
    ]
    out = [_constant("kube_node_labels", labels, times) for labels in nodes]
    out += [
        _constant("kube_node_info", _node_info(node, provider_id), times) for node, provider_id in PROVIDER_IDS.items()
    ]
    for metric, label, namespace, name, kind, owner in parents:
        controller = "false" if kind == "<none>" else "true"
        labels = {"namespace": namespace, label: name, "owner_kind": kind, "owner_name": owner}
        out.append(_constant(metric, {**labels, "owner_is_controller": controller}, times))
    for namespace, pod, container, node, resource, kind, owner in pods:
        when = later if pod == "notebook-0" else times
        phase = "Succeeded" if pod.startswith("old-job") else "Running"
        who = {"namespace": namespace, "pod": pod, "uid": f"uid-{pod}"}
        out.append(
            _constant(
                "kube_pod_owner", {**who, "owner_kind": kind, "owner_name": owner, "owner_is_controller": "true"}, when
            )
        )
        request = {"namespace": namespace, "pod": pod, "uid": f"uid-{pod}", "container": container, "node": node}
        out.append(
            _constant(
                "kube_pod_container_resource_requests", {**request, "resource": resource, "unit": "integer"}, when
            )
        )
        for name, (cpu, memory) in CPU_MEMORY.get(pod, {}).items():
            for resource_name, unit, amount in (("cpu", "core", cpu), ("memory", "byte", memory)):
                if amount is not None:
                    labels = {**request, "container": name, "resource": resource_name, "unit": unit}
                    out.append(_constant("kube_pod_container_resource_requests", labels, when, amount))
        if pod == "trainer-7d9f8b6c5d-x2k4q":  # an init container's requests are a metric of their own, not counted
            init = {**request, "container": "fetch-weights", "resource": "cpu", "unit": "core"}
            out.append(_constant("kube_pod_init_container_resource_requests", init, when, 16))
        for each in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            out.append(_constant("kube_pod_status_phase", {**who, "phase": each}, when, float(each == phase)))
    return out


def _node_info(node: str, provider_id: str) -> dict[str, str]:
    """``kube_node_info``'s labels as kube-state-metrics v2 exports them (an EKS node, or a GKE one)."""
    eks = provider_id.startswith("aws://")
    return {
        "node": node,
        "container_runtime_version": "containerd://1.7.27" if eks else "containerd://2.0.4",
        "kernel_version": "6.1.141-155.222.amzn2023.x86_64" if eks else "6.6.87+",
        "kubelet_version": "v1.34.2-eks-113cf36" if eks else "v1.34.1-gke.1829001",
        "kubeproxy_version": "deprecated",
        "os_image": "Amazon Linux 2023.8.20250818" if eks else "Container-Optimized OS from Google",
        "pod_cidr": "" if eks else "10.48.2.0/24",
        "provider_id": provider_id,
        "internal_ip": {NODE_A: "10.0.172.246", NODE_B: "10.0.1.23"}.get(node, "10.164.0.7"),
    }


def history_end(now: float | None = None, step_s: int = STEP_S) -> int:
    """The last sample's time: on the step grid, a quarter of an hour before now (blocks load at startup)."""
    now = time.time() if now is None else now
    return int(now // step_s) * step_s - ENDS_BEFORE_NOW_S


def create_blocks(openmetrics: Path, tsdb: Path) -> None:
    _prometheus, promtool = require_binaries()
    tsdb.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(openmetrics), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


# ----------------------------------------------------------------------------------------------------- the server


class PrometheusServer:
    """One ``prometheus`` process on 127.0.0.1 serving ``data_dir``; no scrape targets unless ``config_text`` names
    some."""

    def __init__(self, data_dir: Path, port: int | None = None, *, config_text: str | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.config_text = (
            config_text or "global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\nscrape_configs: []\n"
        )
        """The prometheus.yml it runs with: by default no scrape targets (the history is backfilled)."""
        self.config = data_dir.parent / f"{data_dir.name}.yml"
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        binary, _promtool = require_binaries()
        self.config.write_text(self.config_text)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data_dir}",
                    "--storage.tsdb.retention.time=100y",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: {self._log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prometheus was not ready within {timeout_s:g} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


# ----------------------------------------------------------------------------------------------------- stub servers


@dataclass
class Answer:
    status: int
    body: str = ""
    content_type: str = "application/json"
    delay_s: float = 0.0


class StubServer:
    """A tiny HTTP server answering from a list of Answers (the last one repeats); records each request's headers."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = answers
        self.requests: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append({k.lower(): v for k, v in self.headers.items()})
                answer = stub.answers[min(len(stub.requests), len(stub.answers)) - 1]
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                body = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", answer.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


EMPTY_MATRIX = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})


class CountingSession(requests.Session):
    """A requests.Session that records every query it sends; ``before(n)`` runs before the n-th request."""

    def __init__(self, before: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self.sent: list[dict[str, str]] = []
        self.before = before

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(dict(kwargs.get("params") or {}))
        if self.before is not None:
            self.before(len(self.sent))
        return super().request(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def history() -> History:
    return make_history(history_end())


@pytest.fixture(scope="session")
def tsdb_template(history: History, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The history backfilled into TSDB blocks once; each server gets its own copy."""
    require_binaries()
    root = tmp_path_factory.mktemp("prometheus-history")
    openmetrics = root / "history.om"
    history.write_openmetrics(openmetrics)
    create_blocks(openmetrics, root / "tsdb")
    return root / "tsdb"


@pytest.fixture
def start_prometheus(tsdb_template: Path, tmp_path: Path) -> Iterator[Callable[[], PrometheusServer]]:
    """Starts a fresh server on a copy of the backfilled history; every server started is stopped at teardown."""
    started: list[PrometheusServer] = []

    def start() -> PrometheusServer:
        data = tmp_path / f"prometheus-{len(started)}"
        shutil.copytree(tsdb_template, data)
        server = PrometheusServer(data)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def prometheus(start_prometheus: Callable[[], PrometheusServer]) -> PrometheusServer:
    return start_prometheus()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``os.environ`` without any GPULEDGER_PROMETHEUS_* credentials."""
    for name in list(os.environ):
        if name.startswith("GPULEDGER_PROMETHEUS"):
            monkeypatch.delenv(name)
    return dict(os.environ)
