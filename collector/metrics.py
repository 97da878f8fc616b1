"""The agent's live values on ``/metrics``, named and labelled as dcgm-exporter does.

Existing Grafana dashboards built on dcgm-exporter, and ``gpuledger scrape`` through Prometheus, work against it:
metric names are DCGM field names, units are dcgm-exporter's (FB in MiB, power in W, energy in mJ), labels are
``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname``, ``GPU_I_PROFILE``/``GPU_I_ID`` for MIG instances and
``pod``/``namespace``/``container`` for the holder.

A GPU several pods hold (time-slicing, MPS) is exported as dcgm-exporter's per-process metrics do
(NVIDIA/dcgm-exporter ``internal/pkg/transformation/process_metrics.go``): the device's own series carry no pod
labels, and each pod with NVML process readings gets its own ``DCGM_FI_DEV_GPU_UTIL`` (its processes' SM
utilization, summed) and ``DCGM_FI_DEV_FB_USED`` (their memory, MiB) with its pod labels.

Beside dcgm-exporter's families, what kube-state-metrics would say about the node and the GPU pods, for a Prometheus
that scrapes only the agents (``gpuledger scrape`` reads these where kube-state-metrics' series are missing,
:mod:`collector.prometheus.kube_state`); each is a gauge of value 1 or an amount, and a label whose value is unknown
is left out:

- ``gpuledger_node_info{node, instance_type, capacity_type, region, zone, provider_id, gpu_count, mig_strategy}``: one
  sample per node the agent's ``nodes`` rows named (its newest row);
- ``gpuledger_pod_owner{namespace, pod, owner_kind, owner_name, owner_chain}``: the top-level controller and the owner
  chain of each pod holding a GPU now (a pod whose owner is unknown has none);
- ``gpuledger_pod_requests{namespace, pod, resource="cpu"|"memory"}``: that pod's CPU request in cores and memory
  request in bytes, summed over its containers.

A pod drops out of the last two as soon as it holds no GPU, as the per-GPU pod labels do.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from analysis.units import MIB
from collector.errors import MetricsPortBusy
from collector.rows import Records, Rows

GAUGES = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", lambda s: s["util_pct"]),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", lambda s: _mib(s["fb_used_bytes"])),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", lambda s: _mib(_free(s))),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", lambda s: s["power_w"]),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", lambda s: s["temp_c"]),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", lambda s: s["sm_clock_mhz"]),
    (
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "Current clock event (throttle) reasons, a bitmask.",
        lambda s: s["clock_event_reasons"],
    ),
)
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
NODE_INFO = "gpuledger_node_info"
NODE_INFO_LABELS = ("instance_type", "capacity_type", "region", "zone", "provider_id", "gpu_count", "mig_strategy")
"""``gpuledger_node_info``'s labels besides ``node``: the ``nodes`` columns of the same names."""
POD_OWNER = "gpuledger_pod_owner"
POD_OWNER_LABELS = ("owner_kind", "owner_name", "owner_chain")
"""``gpuledger_pod_owner``'s labels besides ``namespace`` and ``pod``: the ``gpu_allocations`` columns of the same
names."""
POD_REQUESTS = "gpuledger_pod_requests"
REQUEST_COLUMNS = (("cpu", "cpu_request"), ("memory", "memory_request_bytes"))
"""``gpuledger_pod_requests``' ``resource`` label and the ``gpu_allocations`` column it reads."""


class LiveMetrics(Collector):
    """Holds the newest sample of every GPU and renders it on each scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[tuple[str, Any], dict[str, Any]] = {}
        self._energy_mj: dict[tuple[str, Any], float] = {}
        self._holders: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}

    def update(self, rows: Rows | Records) -> None:
        samples = rows.sample_dicts()
        holders = rows.allocation_dicts()
        nodes = rows.node_dicts()
        with self._lock:
            for node in nodes:
                name = node.get("node")
                if name and (name not in self._nodes or _day(node) >= _day(self._nodes[name])):
                    self._nodes[name] = node
            for sample in samples:
                key = (sample["gpu_uuid"], sample["mig_instance_id"])
                self._samples[key] = sample
                if sample["energy_j"] is not None:
                    self._energy_mj[key] = sample["energy_j"] * 1000.0
                self._holders.pop(key, None)
            for holder in holders:
                key = (holder["gpu_uuid"], holder["mig_instance_id"])
                if holder.get("pod"):
                    self._holders.setdefault(key, []).append(holder)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            samples = dict(self._samples)
            energy = dict(self._energy_mj)
            holders = dict(self._holders)
            nodes = dict(self._nodes)
        families = [(Metric(name, doc, "gauge"), value_of) for name, doc, value_of in GAUGES]
        counter = Metric(ENERGY, "Total energy consumption since boot (in mJ).", "counter")
        by_name = {family.name: family for family, _ in families}
        for key, sample in sorted(samples.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)):
            pods = _pods(holders.get(key, []))
            labels = _labels(sample, pods[0][1][0] if len(pods) == 1 else None)
            for family, value_of in families:
                value = value_of(sample)
                if value is not None:
                    family.add_sample(family.name, labels, float(value))
            if key in energy:
                counter.add_sample(ENERGY, labels, energy[key])
            if len(pods) > 1:
                for _, pod_rows in pods:
                    _add_process_series(by_name, _labels(sample, pod_rows[0]), pod_rows)
        yield from (family for family, _ in families)
        yield counter
        yield from (family for family in _identity(nodes, holders) if family.samples)


def serve(metrics: LiveMetrics, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr:port`` in a background thread; returns the server, bound (``.server_port`` is
    the port, ``.shutdown()`` stops it). Loopback unless an address is given: the values name pods and namespaces.
    A port that cannot be bound (in use, not permitted, an unknown address) raises MetricsPortBusy."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    try:
        server, _thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise MetricsPortBusy(addr, port, reason[:1].lower() + reason[1:]) from None
    return server


def _identity(nodes: dict[str, dict[str, Any]], holders: dict[tuple[str, Any], list[dict[str, Any]]]) -> list[Metric]:
    """``gpuledger_node_info`` of every node, ``gpuledger_pod_owner`` and ``gpuledger_pod_requests`` of every pod
    holding a GPU."""
    node_info = Metric(NODE_INFO, "The node the agent runs on, as its Node object describes it (value 1).", "gauge")
    for name, node in sorted(nodes.items()):
        node_info.add_sample(NODE_INFO, {"node": name, **_known(node, NODE_INFO_LABELS)}, 1.0)
    owner = Metric(POD_OWNER, "Top-level controller and owner chain of a pod holding a GPU (value 1).", "gauge")
    requests = Metric(POD_REQUESTS, "CPU (cores) and memory (bytes) requests of a pod holding a GPU.", "gauge")
    for (namespace, pod), facts in sorted(_pod_facts(holders).items()):
        who = {"namespace": namespace, "pod": pod}
        if facts.get("owner_kind") and facts.get("owner_name"):
            owner.add_sample(POD_OWNER, who | _known(facts, POD_OWNER_LABELS), 1.0)
        for resource, column in REQUEST_COLUMNS:
            if facts.get(column) is not None:
                requests.add_sample(POD_REQUESTS, who | {"resource": resource}, float(facts[column]))
    return [node_info, owner, requests]


def _pod_facts(holders: dict[tuple[str, Any], list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, pod) -> the owner and request columns of the pods holding a GPU, each column its newest known
    value over the pod's allocation rows."""
    rows = sorted((row for held in holders.values() for row in held), key=lambda r: _epoch(r.get("ts")))
    facts: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        known = facts.setdefault((row.get("namespace") or "", row["pod"]), {})
        for column in (*POD_OWNER_LABELS, *(c for _, c in REQUEST_COLUMNS)):
            if row.get(column) is not None:
                known[column] = row[column]
    return facts


def _known(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, str]:
    """The columns of ``row`` that have a value, as label values."""
    return {c: str(row[c]) for c in columns if row.get(c) is not None and row[c] != ""}


def _day(node: dict[str, Any]) -> dt.date:
    return node.get("date") or dt.date.min


def _epoch(ts: dt.datetime | None) -> float:
    if ts is None:
        return float("-inf")
    return (ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).timestamp()


def _pods(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, str, str], list[dict[str, Any]]]]:
    """The allocation rows of one device grouped by pod, in name order."""
    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault((row.get("namespace") or "", row["pod"], row.get("container") or ""), []).append(row)
    return sorted(grouped.items())


def _add_process_series(families: dict[str, Metric], labels: dict[str, str], rows: list[dict[str, Any]]) -> None:
    """One pod's per-process series: its processes' SM utilization summed, and their memory in MiB."""
    util = [r["process_util_pct"] for r in rows if r.get("process_util_pct") is not None]
    memory = [r["process_fb_used_bytes"] for r in rows if r.get("process_fb_used_bytes") is not None]
    if util:
        families["DCGM_FI_DEV_GPU_UTIL"].add_sample("DCGM_FI_DEV_GPU_UTIL", labels, float(sum(util)))
    if memory:
        families["DCGM_FI_DEV_FB_USED"].add_sample("DCGM_FI_DEV_FB_USED", labels, sum(memory) / MIB)


def _labels(sample: dict[str, Any], holder: dict[str, Any] | None) -> dict[str, str]:
    """dcgm-exporter's label set: MIG labels only on MIG rows, pod labels only when a pod holds the GPU."""
    labels = {"UUID": sample["gpu_uuid"]}
    if sample["gpu_index"] is not None:
        labels["gpu"] = str(sample["gpu_index"])
        labels["device"] = f"nvidia{sample['gpu_index']}"
    if sample["gpu_model"]:
        labels["modelName"] = sample["gpu_model"]
    if sample["node"]:
        labels["Hostname"] = sample["node"]
    if sample["mig_instance_id"] is not None:
        labels["GPU_I_ID"] = str(sample["mig_instance_id"])
        labels["GPU_I_PROFILE"] = sample["mig_profile"] or ""
    if holder and holder.get("pod"):
        labels.update({k: holder.get(k) or "" for k in ("pod", "namespace", "container")})
    return labels


def _mib(value: float | None) -> float | None:
    return None if value is None else value / MIB


def _free(sample: dict[str, Any]) -> float | None:
    if sample["fb_total_bytes"] is None or sample["fb_used_bytes"] is None:
        return None
    return float(sample["fb_total_bytes"] - sample["fb_used_bytes"])
