"""dcgm-exporter: its ``/metrics`` text, or DCGM series a Prometheus returns, into gpu_samples and gpu_allocations.

``rows_from_points`` is the one mapping from DCGM metric names and labels to warehouse rows; ``parse_exposition``
(a scraped ``/metrics`` body) and the Prometheus scraper both feed it :class:`DcgmPoint` values.

Label facts it honours (see ``shared/fixtures/SOURCES.md``):

- ``Hostname`` (released images) or ``hostname`` (main branch) names the node.
- MIG instances carry the parent GPU's ``UUID`` plus ``GPU_I_PROFILE`` and ``GPU_I_ID``; the whole GPU's own series
  have no ``GPU_I_ID``, so a MIG GPU yields one row for itself and one per instance.
- The pod holding a GPU arrives as ``pod``/``namespace``/``container``, as ``pod_name``/``pod_namespace``/
  ``container_name`` (``--use-old-namespace``), or as ``exported_pod``/... (a ServiceMonitor without
  ``honorLabels``: the plain ``pod`` then names the exporter pod itself).
- Through a ServiceMonitor, a GPU that no pod holds still carries ``pod``/``namespace``/``container`` labels: the
  scrape target's, i.e. the exporter's own pod (``nvidia-dcgm-exporter-wqqqn`` in the real Prometheus answers of
  ``h100x8_prometheus_vector_*.json``). That pod is never a holder: see ``_is_exporter_pod``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, NoReturn
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa
import requests
from prometheus_client.parser import text_string_to_metric_families

from analysis.units import MIB
from collector import fetch
from collector.errors import AnswerTooLarge, BadUrl, SourceRejected, SourceUnreachable, connection_failure
from collector.rows import Rows
from collector.workloads import workload_from_pod
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES

log = logging.getLogger(__name__)

SOURCE = "dcgm-exporter"
DEFAULT_PORT = 9400
UNREACHABLE_FIX = f"check the URL and that dcgm-exporter is running (default port {DEFAULT_PORT})"
NOT_METRICS_FIX = f"point the URL at dcgm-exporter's metrics endpoint, e.g. http://NODE:{DEFAULT_PORT}/metrics"
SCHEME_FIX = f"use an http:// or https:// URL (or HOST:PORT), e.g. http://NODE:{DEFAULT_PORT}/metrics"
NO_SAMPLES_FIX = "check dcgm-exporter's logs and that DCGM can see the GPUs"

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
GR_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
SM_ACTIVE = "DCGM_FI_PROF_SM_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
FB_TOTAL = "DCGM_FI_DEV_FB_TOTAL"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
TOTAL_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
GPU_TEMP = "DCGM_FI_DEV_GPU_TEMP"
SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"
CLOCK_REASONS = ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS")
"""The clock-event reasons bitmask: the current name first, then the name older exporters use."""
METRICS = frozenset(
    {GPU_UTIL, GR_ENGINE_ACTIVE, SM_ACTIVE, FB_USED, FB_FREE, FB_RESERVED, FB_TOTAL}
    | {POWER_USAGE, TOTAL_ENERGY, GPU_TEMP, SM_CLOCK, *CLOCK_REASONS}
)
"""The DCGM fields gpu_samples is built from; every other DCGM metric only makes its GPU known."""

_POD_LABELS = (
    ("exported_namespace", "exported_pod", "exported_container"),
    ("pod_namespace", "pod_name", "container_name"),
    ("namespace", "pod", "container"),
)
"""Where the holding pod is, best first: exported_* beats pod_name, which beats the plain (maybe exporter's) pod."""

DRA_CLAIM_NAME = "dra_claim_name"
DRA_CLAIM_NAMESPACE = "dra_claim_namespace"
DRA_DRIVER_NAME = "dra_driver_name"
DRA_POOL_NAME = "dra_pool_name"
DRA_DEVICE_NAME = "dra_device_name"
DRA_MIG_PROFILE = "dra_mig_profile"
DRA_MIG_DEVICE_UUID = "dra_mig_device_uuid"
"""The labels dcgm-exporter adds (``KUBERNETES_ENABLE_DRA``) to a GPU's series when a DRA ResourceClaim holds it
(NVIDIA/dcgm-exporter ``internal/pkg/transformation/const.go`` and ``kubernetes.go``): the claim, the
driver/pool/device triplet, and for a MIG device the profile and the MIG device's UUID."""

_INT_LIMITS = {pa.int32(): (-(2**31), 2**31 - 1), pa.int64(): (-(2**63), 2**63 - 1)}
_VALUE_COLUMNS = (
    "util_pct",
    "sm_active",
    "fb_used_bytes",
    "fb_total_bytes",
    "power_w",
    "energy_j",
    "temp_c",
    "sm_clock_mhz",
    "clock_event_reasons",
)


class DcgmPoint(NamedTuple):
    """One sample of one DCGM metric series; ``ts`` is an aware UTC datetime."""

    name: str
    labels: Mapping[str, str]
    ts: dt.datetime
    value: float


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- workload names ----------------------------------------------------------------------------------------------


# --- points into rows --------------------------------------------------------------------------------------------

Holder = tuple[str | None, str, str | None]
"""(namespace, pod, container) of a pod that holds a GPU."""
ReadingKey = tuple[str, int | None, dt.datetime]
"""(gpu_uuid, mig_instance_id, ts): the gpu_samples key."""


class _Reading:
    """Everything the points say about one GPU or MIG instance at one time. A chunk holds tens of thousands, most
    without a pod: the pods' containers are made when a pod first shows up."""

    __slots__ = (
        "claims",
        "gpu_index",
        "gpu_model",
        "holders",
        "mig_profile",
        "node",
        "pod_values",
        "processes",
        "values",
    )

    def __init__(self, node: str, gpu_index: float | None, gpu_model: str | None, mig_profile: str | None) -> None:
        self.node = node
        self.gpu_index = gpu_index
        self.gpu_model = gpu_model
        self.mig_profile = mig_profile
        self.values: dict[str, float] = {}
        self.holders: set[Holder] = _NO_HOLDERS
        self.pod_values: dict[Holder, dict[str, float]] = _NO_POD_VALUES
        """Values of the series that carry a pod's labels, per pod, in the order they came."""
        self.processes: dict[Holder, dict[str, float]] = _NO_POD_VALUES
        """Per pod, its processes' GPU_UTIL (SM %) and FB_USED (MiB): dcgm-exporter's per-process series."""
        self.claims: dict[Holder, str] = _NO_CLAIMS
        """The DRA ResourceClaim (``namespace/name``) through which a holder holds this device, when it is one."""


_NO_HOLDERS: set[Holder] = set()
_NO_POD_VALUES: dict[Holder, dict[str, float]] = {}
_NO_CLAIMS: dict[Holder, str] = {}
"""The shared empty containers of a reading without pods, never written: each is replaced by its own before the
first write (see :func:`_collect` and :func:`_settle`)."""


class DcgmSeries(NamedTuple):
    """One DCGM metric series: its name, its labels and its (time, value) samples, in time order. A time is whatever
    ``when`` of :func:`rows_from_series` turns into an aware UTC datetime (e.g. epoch seconds)."""

    name: str
    labels: Mapping[str, str]
    samples: Sequence[tuple[float, float]]


def rows_from_points(points: Iterable[DcgmPoint], *, cluster: str, source: str) -> Rows:
    """gpu_samples rows (one per GPU or MIG instance per timestamp) and gpu_allocations rows (one per holding pod
    of each of those). Points of other metrics, or without a ``UUID`` label, are ignored; out-of-range values
    become null and are logged once per column."""
    readings = _collect((name, labels, ((ts, value),)) for name, labels, ts, value in points)
    return _rows(readings, cluster, source)


def rows_from_series(
    series: Iterable[DcgmSeries], *, cluster: str, source: str, when: Callable[[float], dt.datetime]
) -> Rows:
    """:func:`rows_from_points` of every sample of every series (in that order): the very same rows, without one
    DcgmPoint per sample. A device's own series (no pod, one each per metric, the same labels, times rising) are
    mapped as arrays (:class:`_Plain`); every other GPU's series are read sample by sample, each series' labels read
    once and each time turned into a datetime once per reading."""
    plain, held = _split(series)
    return _rows(_collect(held), cluster, source, when, plain)


def _rows(
    readings: dict[tuple[str, int | None, Any], _Reading],
    cluster: str,
    source: str,
    when: Callable[[float], dt.datetime] | None = None,
    plain: Mapping[tuple[str, int | None], _Plain] | None = None,
) -> Rows:
    for reading in readings.values():
        if reading.pod_values:  # only a pod's series leave anything to settle
            _settle(reading)
    ordered = sorted(readings, key=_series_order)
    keyed: dict[ReadingKey, _Reading] = {
        (uuid, mig, ts if when is None else when(ts)): readings[(uuid, mig, ts)] for uuid, mig, ts in ordered
    }
    keys = list(keyed)
    joined = _Readings.joined(_blocks(keys, keyed, plain or {}, _Stamps(when)))
    samples = _samples_table(joined, cluster, source)
    allocations = _allocations_table(joined, cluster, source)
    return Rows(samples, allocations, NODES.schema.empty_table())


_Facts = tuple[str, int | None, "Holder | None", bool, str | None, tuple[str, float | None, str | None, str | None]]
"""What a series' labels say, read once per series: (UUID, MIG instance, holder, whether the holder holds this
instance, its DRA claim, the new reading's node/index/model/profile)."""


def _facts(labels: Mapping[str, str]) -> _Facts | None:
    uuid = labels.get("UUID")
    if not uuid:
        return None
    holder = _holder(labels)
    holds = holder is not None and _holds_this_instance(labels)
    claim = _claim(labels, holder) if holder is not None and holds else None
    index = labels.get("gpu")
    reading = (
        labels.get("Hostname") or labels.get("hostname") or "",
        _number(index) if index else None,
        labels.get("modelName") or None,
        labels.get("GPU_I_PROFILE") or _dra_mig_profile(labels),
    )
    return uuid, _instance_id(labels), holder, holds, claim, reading


def _collect(
    series: Iterable[tuple[str, Mapping[str, str], Iterable[tuple[Any, float]]]],
) -> dict[tuple[str, int | None, Any], _Reading]:
    """Every sample's reading, in the order the samples come (the first value of a metric wins); a series' labels
    are read once for all its samples, and once for all the series that share the very same labels object."""
    readings: dict[tuple[str, int | None, Any], _Reading] = {}
    known: dict[int, tuple[Mapping[str, str], _Facts | None]] = {}
    for name, labels, samples in series:
        if not name.startswith("DCGM_"):
            continue
        seen = known.get(id(labels))
        if seen is None or seen[0] is not labels:  # the labels object is kept alive in ``known``: its id stays its own
            seen = known[id(labels)] = (labels, _facts(labels))
        facts = seen[1]
        if facts is None:
            continue
        uuid, instance, holder, holds, claim, new = facts
        recorded = name in METRICS
        get = readings.get
        for ts, value in samples:
            key = (uuid, instance, ts)
            reading = get(key)
            if reading is None:
                reading = readings[key] = _Reading(*new)
            if recorded:  # a series without pod labels is the device's own; a pod's waits for _settle
                if holder is None:
                    reading.values.setdefault(name, value)
                else:
                    if reading.pod_values is _NO_POD_VALUES:
                        reading.pod_values = {}
                    reading.pod_values.setdefault(holder, {}).setdefault(name, value)
            if holds and holder is not None:
                if reading.holders is _NO_HOLDERS:
                    reading.holders = set()
                reading.holders.add(holder)
                if claim is not None:
                    if reading.claims is _NO_CLAIMS:
                        reading.claims = {}
                    reading.claims.setdefault(holder, claim)
    return readings


PLAIN_MIN_SAMPLES = 16
"""Shorter series are read sample by sample: for a few points (a follow step's one), numpy's per-call cost is more
than the Python loop's (``make bench BENCH_ARGS="--only follow"``)."""


class _Plain:
    """One GPU's or MIG instance's series while they allow array mapping: the same holder (or none) and the same
    reading facts (node, index, model, profile) on all, each metric once, each series' times rising. Its rows are
    the union of the series' times; a metric's value is its series' value at that time, absent elsewhere; the
    holder, when it holds this device, holds it at every one of those times."""

    __slots__ = ("arrays", "held", "new", "series")

    def __init__(self, facts: _Facts) -> None:
        self.new = facts[5]
        self.held = facts[2:5]
        """(holder, whether it holds this device, its DRA claim), as :func:`_facts` reads them."""
        self.series: list[tuple[str, Mapping[str, str], Sequence[tuple[Any, float]]]] = []
        """Every series as it came, for :func:`_collect` should the group stop being plain."""
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = {}
        """Per metric, its (times, values); None once the group is not plain."""

    def add(self, name: str, labels: Mapping[str, str], samples: Sequence[tuple[Any, float]], facts: _Facts) -> None:
        self.series.append((name, labels, samples))
        if self.arrays is None:
            return
        if len(samples) < PLAIN_MIN_SAMPLES or facts[5] != self.new or facts[2:5] != self.held or name in self.arrays:
            self.arrays = None
            return
        try:
            flat = np.fromiter(itertools.chain.from_iterable(samples), np.float64, count=2 * len(samples))
        except (TypeError, ValueError):
            self.arrays = None
            return
        times = flat[0::2]
        if not np.all(times[1:] > times[:-1]):  # repeated, unordered or NaN times: the first value must win
            self.arrays = None
            return
        self.arrays[name] = (times, flat[1::2])


def _split(
    series: Iterable[tuple[str, Mapping[str, str], Sequence[tuple[Any, float]]]],
) -> tuple[dict[tuple[str, int | None], _Plain], list[tuple[str, Mapping[str, str], Sequence[tuple[Any, float]]]]]:
    """The DCGM series by GPU or MIG instance: the plain groups (mapped as arrays), and the series of every other
    group in the order they came (mapped sample by sample by :func:`_collect`)."""
    groups: dict[tuple[str, int | None], _Plain] = {}
    known: dict[int, tuple[Mapping[str, str], _Facts | None]] = {}
    for name, labels, samples in series:
        if not name.startswith("DCGM_"):
            continue
        seen = known.get(id(labels))
        if seen is None or seen[0] is not labels:  # kept alive in ``known``: the id stays this labels object's
            seen = known[id(labels)] = (labels, _facts(labels))
        facts = seen[1]
        if facts is None:
            continue
        group = groups.get((facts[0], facts[1]))
        if group is None:
            group = groups[(facts[0], facts[1])] = _Plain(facts)
        group.add(name, labels, samples, facts)
    plain = {key: group for key, group in groups.items() if group.arrays is not None}
    held = [one for group in groups.values() if group.arrays is None for one in group.series]
    return plain, held


PROCESS_METRICS = (GPU_UTIL, FB_USED)
"""What dcgm-exporter exports per pod from its per-process NVML readings (``process_metrics.go``)."""


def _settle(reading: _Reading) -> None:
    """Where a device has its own (pod-less) series of GPU_UTIL or FB_USED beside pods' series of the same metric,
    the pods' are their per-process readings (dcgm-exporter's per-process metrics), never the device's sample.
    Otherwise a pod's series are the device's series labelled with its holder (one pod, or copies for each pod of a
    time-sliced GPU with ``--kubernetes-virtual-gpus``), and the first one gives the device's values."""
    own = set(reading.values)
    for holder, values in reading.pod_values.items():
        measured = {n: v for n, v in values.items() if n in PROCESS_METRICS and n in own}
        if measured and holder in reading.holders:
            if reading.processes is _NO_POD_VALUES:
                reading.processes = {}
            reading.processes[holder] = measured
        for name, value in values.items():
            if name not in measured:
                reading.values.setdefault(name, value)


def _instance_id(labels: Mapping[str, str]) -> int | None:
    """The MIG instance a series is about: DCGM's ``GPU_I_ID``; for a MIG device that a DRA claim created and whose
    series has no ``GPU_I_ID``, an id derived from its ``dra_mig_device_uuid`` (see :func:`dra_instance_id`)."""
    instance = _int_label(labels.get("GPU_I_ID"))
    if instance is None and labels.get(DRA_MIG_DEVICE_UUID):
        return dra_instance_id(labels[DRA_MIG_DEVICE_UUID])
    return instance


def dra_instance_id(mig_uuid: str) -> int:
    """A stable MIG instance id for a MIG device known only by its UUID (``MIG-...``): the first 28 bits of the
    UUID's SHA-256, so the same device gets the same id in every scrape and from every source."""
    return int(hashlib.sha256(mig_uuid.encode()).hexdigest()[:7], 16)


def _holds_this_instance(labels: Mapping[str, str]) -> bool:
    """False for a MIG instance's series that dcgm-exporter copied for a DRA claim on a MIG device of another
    profile of the same GPU (it labels every series of the parent GPU with each of its claims)."""
    profile, claimed = labels.get("GPU_I_PROFILE"), labels.get(DRA_MIG_PROFILE)
    return not (profile and claimed and profile != claimed)


def _claim(labels: Mapping[str, str], holder: Holder) -> str | None:
    """``namespace/name`` of the DRA ResourceClaim on the series; a claim without its namespace is in the pod's."""
    name = labels.get(DRA_CLAIM_NAME)
    if not name:
        return None
    namespace = labels.get(DRA_CLAIM_NAMESPACE) or holder[0] or ""
    return f"{namespace}/{name}"


def _dra_mig_profile(labels: Mapping[str, str]) -> str | None:
    """The profile of a DRA-created MIG device, for a series that is that device's (it has an instance)."""
    if labels.get("GPU_I_ID") or labels.get(DRA_MIG_DEVICE_UUID):
        return labels.get(DRA_MIG_PROFILE) or None
    return None


def _int_label(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _holder(labels: Mapping[str, str]) -> Holder | None:
    for namespace, pod, container in _POD_LABELS:
        name = labels.get(pod)
        if not name:
            continue
        if pod == "pod" and _is_exporter_pod(labels, name):
            return None
        return labels.get(namespace) or None, name, labels.get(container) or None
    return None


def _is_exporter_pod(labels: Mapping[str, str], pod: str) -> bool:
    """Whether a plain ``pod`` label names the exporter that was scraped rather than a pod holding the GPU.

    Prometheus' Kubernetes discovery gives every scraped series its target's pod, namespace and container; with
    ``honorLabels`` dcgm-exporter's own pod labels win for held GPUs, but a GPU no pod holds keeps the target's.
    The exporter never holds a GPU, so its pod (named after the scrape job or service, or after dcgm-exporter)
    is dropped.
    """
    scrape_names = {labels.get("job"), labels.get("service")} - {None, ""}
    return "dcgm-exporter" in pod or workload_from_pod(pod) in scrape_names or labels.get("container") in scrape_names


def _series_order(key: tuple[str, int | None, Any]) -> tuple[str, bool, int, Any]:
    """Series by series, each in time order, whole GPU after its MIG instances: the nulls-last key order ingest
    keeps without sorting again."""
    uuid, mig, ts = key
    return uuid, mig is None, mig or 0, ts


class _Stamps:
    """Epoch microseconds of a plain group's times (``when`` of each distinct time, once)."""

    def __init__(self, when: Callable[[float], dt.datetime] | None) -> None:
        self._when = when
        self._us: dict[float, int] = {}

    def __call__(self, times: np.ndarray) -> np.ndarray:
        if self._when is None:
            raise ValueError("plain series need a `when`")  # only rows_from_series makes plain groups
        us = self._us
        for t in times.tolist():
            if t not in us:
                us[t] = _epoch_us([self._when(t)])[0]
        return np.array([us[t] for t in times.tolist()], dtype=np.int64)


@dataclass
class _Readings:
    """Readings as columns, in the gpu_samples key order: who and when, and each DCGM metric's raw values."""

    ts_us: np.ndarray
    uuid: list[str]
    mig: list[int | None]
    node: list[str]
    gpu_model: list[str | None]
    mig_profile: list[str | None]
    gpu_index: _Column
    values: dict[str, _Column]
    held: dict[str, list[Any]]
    """The gpu_allocations columns of the pods holding these readings (:data:`_HELD_COLUMNS`)."""

    @classmethod
    def of_objects(cls, keys: list[ReadingKey], readings: dict[ReadingKey, _Reading]) -> _Readings:
        ordered = [readings[key] for key in keys]
        return cls(
            np.array(_epoch_us([key[2] for key in keys]), dtype=np.int64),
            [key[0] for key in keys],
            [key[1] for key in keys],
            [reading.node for reading in ordered],
            [reading.gpu_model for reading in ordered],
            [reading.mig_profile for reading in ordered],
            _Column.of([reading.gpu_index for reading in ordered]),
            {name: _Column.of([reading.values.get(name) for reading in ordered]) for name in METRICS},
            _held_of_objects(keys, readings),
        )

    @classmethod
    def of_plain(cls, key: tuple[str, int | None], group: _Plain, stamps: _Stamps) -> _Readings:
        times = np.unique(np.concatenate([t for t, _ in group.arrays.values()])) if group.arrays else np.empty(0)
        n = len(times)
        node, gpu_index, gpu_model, mig_profile = group.new
        values: dict[str, _Column] = {}
        for name in METRICS:
            column = _Column(np.full(n, np.nan), np.zeros(n, dtype=bool))
            if group.arrays and name in group.arrays:
                at, value = group.arrays[name]
                where = np.searchsorted(times, at)
                column.value[where] = value
                column.present[where] = True
            values[name] = column
        index = np.nan if gpu_index is None else gpu_index
        ts_us = stamps(times)
        return cls(
            ts_us,
            [key[0]] * n,
            [key[1]] * n,
            [node] * n,
            [gpu_model] * n,
            [mig_profile] * n,
            _Column(np.full(n, index), np.full(n, gpu_index is not None)),
            values,
            _held_of_plain(key, group, ts_us),
        )

    @classmethod
    def joined(cls, blocks: list[_Readings]) -> _Readings:
        if not blocks:
            return cls.of_objects([], {})
        if len(blocks) == 1:
            return blocks[0]

        def column(get: Callable[[_Readings], _Column]) -> _Column:
            return _Column(
                np.concatenate([get(b).value for b in blocks]), np.concatenate([get(b).present for b in blocks])
            )

        return cls(
            np.concatenate([b.ts_us for b in blocks]),
            [x for b in blocks for x in b.uuid],
            [x for b in blocks for x in b.mig],
            [x for b in blocks for x in b.node],
            [x for b in blocks for x in b.gpu_model],
            [x for b in blocks for x in b.mig_profile],
            column(lambda b: b.gpu_index),
            {name: column(lambda b, name=name: b.values[name]) for name in METRICS},  # type: ignore[misc]
            {name: [x for b in blocks for x in b.held[name]] for name in _HELD_COLUMNS},
        )

    def where(self, i: int) -> str:
        """Row ``i`` for a log line: its GPU or MIG instance and time."""
        uuid, mig = self.uuid[i], self.mig[i]
        ts = _EPOCH + dt.timedelta(microseconds=int(self.ts_us[i]))
        return f"{uuid if mig is None else f'{uuid} MIG instance {mig}'} at {ts.isoformat()}"


def _blocks(
    keys: list[ReadingKey],
    readings: dict[ReadingKey, _Reading],
    plain: Mapping[tuple[str, int | None], _Plain],
    stamps: _Stamps,
) -> list[_Readings]:
    """The readings of every GPU and MIG instance, sample-mapped and plain, as column blocks in key order."""
    runs: dict[tuple[str, int | None], list[ReadingKey]] = {}
    for key in keys:  # already in key order: each GPU's or instance's keys one run
        runs.setdefault((key[0], key[1]), []).append(key)
    order = sorted([*runs, *plain], key=lambda g: _series_order((g[0], g[1], 0)))
    blocks: list[_Readings] = []
    pending: list[ReadingKey] = []  # consecutive sample-mapped groups make one block
    for group in order:
        if group not in plain:
            pending += runs[group]
            continue
        if pending:
            blocks.append(_Readings.of_objects(pending, readings))
            pending = []
        blocks.append(_Readings.of_plain(group, plain[group], stamps))
    if pending or not blocks:
        blocks.append(_Readings.of_objects(pending, readings))
    return blocks


def _samples_table(readings: _Readings, cluster: str, source: str) -> pa.Table:
    values = _converted(readings.values)
    values["gpu_index"] = readings.gpu_index
    n = len(readings.uuid)
    columns: dict[str, list[Any] | pa.Array | np.ndarray] = {
        "ts": readings.ts_us,
        "cluster": [cluster] * n,
        "node": readings.node,
        "gpu_uuid": readings.uuid,
        "mig_profile": readings.mig_profile,
        "mig_instance_id": readings.mig,
        "gpu_model": readings.gpu_model,
        "source": [source] * n,
    }
    for name, column in values.items():
        _drop_out_of_range(name, column, readings)
        columns[name] = _typed(name, column)
    _warn_nodeless(readings)
    return pa.table([pa.array(columns[f.name], f.type) for f in GPU_SAMPLES.schema], schema=GPU_SAMPLES.schema)


_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch_us(times: list[dt.datetime]) -> list[int]:
    """Epoch microseconds of aware datetimes (a naive one taken as UTC): pyarrow turns ints into a timestamp column
    many times faster than it converts aware datetimes."""
    return [((ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)) - _EPOCH) // _MICROSECOND for ts in times]


@dataclass
class _Column:
    """One value column of the readings, as float64 values (NaN where absent) and whether each one is there (a
    NaN that came in is there: it is dropped and logged, an absent value is simply null)."""

    value: np.ndarray
    present: np.ndarray

    @classmethod
    def of(cls, items: list[float | None]) -> _Column:
        value = np.array(items, dtype=np.float64)  # None reads as NaN
        present = ~np.isnan(value)
        unsure = np.flatnonzero(~present)
        if len(unsure):
            present[unsure] = [items[i] is not None for i in unsure]
        return cls(value, present)

    def where(self, cond: np.ndarray, other: _Column) -> _Column:
        """This column where ``cond`` holds, else ``other``."""
        return _Column(np.where(cond, self.value, other.value), np.where(cond, self.present, other.present))


def _converted(raw: Mapping[str, _Column]) -> dict[str, _Column]:
    """The readings' DCGM values (``raw``, by metric) in warehouse units (MiB to bytes, mJ to J), still unchecked."""
    read = raw.__getitem__

    engine, sm = read(GR_ENGINE_ACTIVE), read(SM_ACTIVE)
    # the graphics engine's activity, SM activity where it is absent or NaN (an absent SM keeps what the engine had)
    sm_active = sm.where((~engine.present | np.isnan(engine.value)) & sm.present, engine)
    util = read(GPU_UTIL)
    # DCGM_FI_DEV_GPU_UTIL; where a device does not report it (MIG instances never do, dcgm-exporter issue 216),
    # 100 x its graphics-engine activity (DCGM_FI_PROF_GR_ENGINE_ACTIVE, a 0-1 ratio), the same "some kernel was
    # running" measure over the instance's own engines
    util_pct = util.where(util.present, _Column(engine.value * 100.0, engine.present))
    used, free = read(FB_USED), read(FB_FREE)
    energy = read(TOTAL_ENERGY)
    reasons = [read(name) for name in CLOCK_REASONS]
    first_reason = reasons[-1]
    for column in reversed(reasons[:-1]):
        first_reason = column.where(column.present, first_reason)
    return {
        "util_pct": util_pct,
        "sm_active": sm_active,
        "fb_used_bytes": _Column(used.value * MIB, used.present),
        "fb_total_bytes": _fb_total_bytes(used, free, read(FB_RESERVED), read(FB_TOTAL)),
        "power_w": read(POWER_USAGE),
        "energy_j": _Column(energy.value / 1000.0, energy.present),
        "temp_c": read(GPU_TEMP),
        "sm_clock_mhz": read(SM_CLOCK),
        "clock_event_reasons": first_reason,
    }


def _fb_total_bytes(used: _Column, free: _Column, reserved: _Column, total: _Column) -> _Column:
    """USED + FREE (+ RESERVED, which newer DCGM splits out of FREE); FB_TOTAL only when USED or FREE is missing.
    A negative or NaN part makes the total NaN, so it is dropped and logged rather than summed into nonsense."""
    reserved_mib = np.where(reserved.present, reserved.value, 0.0)
    with np.errstate(invalid="ignore"):
        sane = (used.value >= 0) & (free.value >= 0) & (reserved_mib >= 0)
        summed = np.where(sane, used.value + free.value + reserved_mib, np.nan)
    both = used.present & free.present
    mib = _Column(summed, both).where(both, total)
    return _Column(mib.value * MIB, mib.present)


def _drop_out_of_range(name: str, column: _Column, readings: _Readings) -> None:
    """Mark absent, in place, values the warehouse would reject (NaN, infinite, outside the column's range or
    type), and log the column once."""
    low, high = _bounds(name)
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(column.value) & _at_least(column.value, low) & _at_most(column.value, high)
    bad = np.flatnonzero(column.present & ~inside)
    if not len(bad):
        return
    log.warning(
        "dcgm: dropped %d %s value(s) outside [%s, %s], first %r on %s",
        len(bad),
        name,
        low,
        high,
        float(column.value[bad[0]]),
        readings.where(int(bad[0])),
    )
    column.present[bad] = False


def _at_least(values: np.ndarray, low: float) -> np.ndarray:
    """``values >= low`` as Python compares a float with an int bound (exactly, even one no float holds)."""
    bound = float(low)
    return values > bound if bound < low else values >= bound


def _at_most(values: np.ndarray, high: float) -> np.ndarray:
    bound = float(high)
    return values < bound if bound > high else values <= bound


def _bounds(name: str) -> tuple[float, float]:
    """The column's range in the warehouse contract, narrowed to what its integer type can hold."""
    low, high = GPU_SAMPLES.ranges.get(name, (None, None))
    type_low, type_high = _INT_LIMITS.get(GPU_SAMPLES.schema.field(name).type, (-math.inf, math.inf))
    return (type_low if low is None else low), (type_high if high is None else min(high, type_high))


def _typed(name: str, column: _Column) -> pa.Array:
    """The column as the schema's type, absent values null; integers rounded half to even, as ``round`` does."""
    kind = GPU_SAMPLES.schema.field(name).type
    mask = ~column.present
    if pa.types.is_integer(kind):
        whole = np.rint(np.where(column.present, column.value, 0.0)).astype(np.int64)
        return pa.array(whole, type=pa.int64(), mask=mask).cast(kind)
    if kind == pa.float32():
        return pa.array(column.value.astype(np.float32), type=kind, mask=mask)
    return pa.array(column.value, type=kind, mask=mask)


def _warn_nodeless(readings: _Readings) -> None:
    nodeless = {uuid for uuid, node in zip(readings.uuid, readings.node, strict=True) if not node}
    if nodeless:
        log.warning("dcgm: %d GPU(s) have no Hostname/hostname label, node left empty", len(nodeless))


_HELD_COLUMNS = (
    "ts",
    "node",
    "gpu_uuid",
    "mig_instance_id",
    "namespace",
    "pod",
    "container",
    "claim",
    "process_util_pct",
    "process_fb_used_bytes",
)
"""The gpu_allocations columns a block of readings gives (the rest are the chunk's, or the pod's workload)."""


def _held_of_objects(keys: list[ReadingKey], readings: dict[ReadingKey, _Reading]) -> dict[str, list[Any]]:
    held = [(key, readings[key].node, holder) for key in keys for holder in sorted(readings[key].holders, key=_by_name)]
    return {
        "ts": _epoch_us([key[2] for key, _, _ in held]),
        "node": [node for _, node, _ in held],
        "gpu_uuid": [key[0] for key, _, _ in held],
        "mig_instance_id": [key[1] for key, _, _ in held],
        "namespace": [holder[0] for _, _, holder in held],
        "pod": [holder[1] for _, _, holder in held],
        "container": [holder[2] for _, _, holder in held],
        "claim": [readings[key].claims.get(holder) for key, _, holder in held],
        "process_util_pct": [
            _process_util(readings[key].processes.get(holder, {}).get(GPU_UTIL)) for key, _, holder in held
        ],
        "process_fb_used_bytes": [
            _process_bytes(readings[key].processes.get(holder, {}).get(FB_USED)) for key, _, holder in held
        ],
    }


def _held_of_plain(key: tuple[str, int | None], group: _Plain, ts_us: np.ndarray) -> dict[str, list[Any]]:
    holder, holds, claim = group.held
    if holder is None or not holds:
        holder, claim, ts_us = (None, "", None), None, ts_us[:0]
    n = len(ts_us)
    namespace, pod, container = holder
    return {
        "ts": ts_us.tolist(),
        "node": [group.new[0]] * n,
        "gpu_uuid": [key[0]] * n,
        "mig_instance_id": [key[1]] * n,
        "namespace": [namespace] * n,
        "pod": [pod] * n,
        "container": [container] * n,
        "claim": [claim] * n,
        "process_util_pct": [None] * n,
        "process_fb_used_bytes": [None] * n,
    }


def _allocations_table(readings: _Readings, cluster: str, source: str) -> pa.Table:
    held = readings.held
    n = len(held["ts"])
    workloads = {pod: workload_from_pod(pod) for pod in set(held["pod"])}
    columns: dict[str, list[Any]] = {
        **held,
        "cluster": [cluster] * n,
        "workload": [workloads[pod] for pod in held["pod"]],
        "source": [source] * n,
    }
    schema = GPU_ALLOCATIONS.schema
    return pa.table([pa.array(columns.get(f.name, [None] * n), f.type) for f in schema], schema=schema)


def _process_util(pct: float | None) -> float | None:
    return None if pct is None or not math.isfinite(pct) or pct < 0 else min(pct, 100.0)


def _process_bytes(mib: float | None) -> int | None:
    """Null where the value is not a size an int64 column holds (negative, NaN, infinite or absurdly large)."""
    if mib is None or not math.isfinite(mib) or mib < 0:
        return None
    size = round(mib * MIB)
    return size if size < 2**63 else None


def _by_name(holder: Holder) -> tuple[str, str, str]:
    """Nulls last, as ingest orders a key."""
    namespace, pod, container = holder
    return namespace or "\U0010ffff", pod, container or "\U0010ffff"


# --- the /metrics text -------------------------------------------------------------------------------------------


def parse_exposition(text: str, *, cluster: str, scraped_at: dt.datetime, url: str = "the given text") -> Rows:
    """Rows from one dcgm-exporter ``/metrics`` body. A sample's own timestamp wins over ``scraped_at``.

    ``url`` only names the input in errors: a body that is not a Prometheus exposition of DCGM metrics (an HTML
    page, a JSON answer, another exporter's metrics) raises SourceRejected.
    """
    if text.lstrip().startswith(("<", "{", "[")):
        _reject(url, f"the answer is not Prometheus metrics; it begins {_opening(text)}")
    bad: list[int] = []
    try:
        samples = _samples(text)
    except ValueError:
        samples, bad = _valid_lines(text)
        if not samples:
            _reject(url, _nothing_parses(text, bad))
    if samples and not any(name.startswith("DCGM_") for name, _, _, _ in samples):
        _reject(url, f"no DCGM_* metric among its {len(samples)} samples")
    if bad:
        _warn_malformed(text, bad, url)
    points = (
        DcgmPoint(name, labels, scraped_at if seconds is None else _from_unix(seconds), value)
        for name, labels, value, seconds in samples
    )
    rows = rows_from_points(points, cluster=cluster, source=SOURCE)
    return replace(rows, malformed_lines=len(bad), malformed_scrapes=1) if bad else rows


def _valid_lines(text: str) -> tuple[list[WireSample], list[int]]:
    """The samples of every line that parses, and the (1-based) numbers of the lines that do not.

    prometheus_client's parser raises at the first malformed line, so one bad line (a label value cut by a
    redaction, a stray quote) would lose the whole page. Each line is checked alone, then the good ones are parsed
    together; when they still do not parse together (a page that is no exposition at all), nothing is kept.
    """
    good: list[str] = []
    bad: list[int] = []
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if stripped and (not stripped.startswith("#") or stripped.startswith(("# HELP", "# TYPE"))):
            try:
                list(text_string_to_metric_families(f"{line}\n"))
            except (ValueError, KeyError, IndexError):
                bad.append(number)
                continue
        good.append(line)
    try:
        return _samples("\n".join(good)), bad
    except ValueError:
        return [], bad


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _warn_malformed(text: str, bad: list[int], url: str) -> None:
    """One warning per page: how many lines were skipped and where the first is, naming its metric but never its
    labels (a partly redacted label value is exactly what may be on it)."""
    log.warning(
        "dcgm: %s: skipped %d malformed line(s), first at line %d (%s); the page's other samples are kept",
        url,
        len(bad),
        bad[0],
        _line_kind(text, bad[0]),
    )


def _nothing_parses(text: str, bad: list[int]) -> str:
    """Why a page gave no sample at all, naming the first bad line's number and metric, never its labels nor the
    parser's message (prometheus_client quotes the text it choked on, a label value included)."""
    if not bad:
        return "the answer is not Prometheus metrics: no sample parses"
    return (
        f"the answer is not Prometheus metrics: no sample parses, {len(bad)} malformed line(s), the first at line "
        f"{bad[0]} ({_line_kind(text, bad[0])})"
    )


def _line_kind(text: str, number: int) -> str:
    """What line ``number`` (1-based) of ``text`` holds, by its metric name only: ``a DCGM_FI_DEV_GPU_TEMP
    sample``, ``a comment line``, or ``a line with no metric name``."""
    line = text.split("\n", number)[number - 1].strip()
    if line.startswith("#"):
        return "a comment line"
    name = _METRIC_NAME.match(line)
    return f"a {name.group(0)} sample" if name else "a line with no metric name"


WireSample = tuple[str, Mapping[str, str], float, float | None]
"""(metric name as on the wire, labels, value, own timestamp in seconds or None)."""

_LABEL_BLOCK = re.compile(r'\{[^"{}\n]*(?:"[^"\\\n]*(?:\\.[^"\\\n]*)*"[^"{}\n]*)*\}')
"""One ``{...}`` label set on one line; braces inside quoted label values do not end it."""


def _samples(text: str) -> list[WireSample]:
    """Every sample of the exposition, parsed by prometheus_client; ValueError when it is not an exposition.

    prometheus_client parses labels one character at a time (about 1 s for a 1,000-GPU node's 23,000 lines), while
    dcgm-exporter repeats each GPU's label set on every metric. So each distinct label set is parsed once, and the
    text is parsed with a short stand-in label in its place; a text that this trips up is parsed plainly.
    """
    blocks: dict[str, int] = {}
    compact = _LABEL_BLOCK.sub(lambda m: f'{{_k="{blocks.setdefault(m.group(0), len(blocks))}"}}', text)
    try:
        label_sets = [_block_labels(block) for block in blocks]
        return _parsed(compact, lambda labels: label_sets[int(labels["_k"])] if labels else labels)
    except (ValueError, KeyError, IndexError):
        return _parsed(text, lambda labels: labels)


def _block_labels(block: str) -> dict[str, str]:
    families = list(text_string_to_metric_families(f"x{block} 0\n"))
    if len(families) != 1 or len(families[0].samples) != 1:
        raise ValueError(f"label set {block[:40]!r} does not parse alone")
    return families[0].samples[0].labels


def _parsed(text: str, resolve: Callable[[dict[str, str]], Mapping[str, str]]) -> list[WireSample]:
    """prometheus_client renames the samples of a ``# TYPE X counter`` family to ``X_total`` (its OpenMetrics view);
    dcgm-exporter's counters (TOTAL_ENERGY_CONSUMPTION among them) never end in ``_total``, so the suffix is undone.
    """
    out: list[WireSample] = []
    for family in text_string_to_metric_families(text):
        renamed = f"{family.name}_total" if family.type == "counter" else None
        for sample in family.samples:
            name = family.name if sample.name == renamed else sample.name
            seconds = None if sample.timestamp is None else _seconds(sample.timestamp)
            out.append((name, resolve(sample.labels), float(sample.value), seconds))
    return out


def _reject(url: str, reason: str) -> NoReturn:
    raise SourceRejected(SOURCE, url, reason, NOT_METRICS_FIX)


def _opening(text: str) -> str:
    return repr(_clip(" ".join(text.split()), 32))


def _clip(text: str, limit: int) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = text.split("\n", 1)[0].strip()
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


def _seconds(timestamp: object) -> float:
    """Seconds since the epoch of a parsed sample timestamp (a float, or OpenMetrics' Timestamp)."""
    sec, nsec = getattr(timestamp, "sec", None), getattr(timestamp, "nsec", None)
    if isinstance(sec, int) and isinstance(nsec, int):
        return sec + nsec / 1e9
    assert isinstance(timestamp, int | float)
    return float(timestamp)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _from_unix(seconds: float) -> dt.datetime:
    """An aware UTC datetime, rounded to the microsecond so 1773114089.184 stays .184000 and not .183999."""
    return _EPOCH + dt.timedelta(microseconds=round(seconds * 1_000_000))


# --- reading a live exporter -------------------------------------------------------------------------------------


def metrics_url(url: str) -> str:
    """``url`` with ``http://`` when it has no scheme and ``/metrics`` when it has no path (or only ``/``)."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urlunsplit(parts)


class DcgmExporterReader:
    """Reads one dcgm-exporter's ``/metrics`` into Rows, one scrape per ``read()``.

    ``timeout_s`` bounds the whole request (connecting, waiting, the body), not each read; the body is read up to
    ``max_body_mib`` (the ``exporter_max_body_mib`` setting) and refused past it. An answer without one GPU sample
    is an error (the node's GPUs are not seen), not an empty reading.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        session: requests.Session | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        timeout_s: float = 10.0,
        max_body_mib: float = 32.0,
    ) -> None:
        self.url = metrics_url(url)
        self.shown = fetch.display_url(self.url)
        """The URL as errors show it: no user, password or query."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            raise BadUrl(SOURCE, self.shown, f"has the scheme {parts.scheme}://, which is not supported", SCHEME_FIX)
        if not parts.hostname:
            raise BadUrl(SOURCE, self.shown, "has no host", SCHEME_FIX)
        self.cluster = cluster
        self.session = session if session is not None else requests.Session()
        self.clock = clock
        self.timeout_s = timeout_s
        self.max_body_mib = max_body_mib

    def read(self) -> Rows:
        body = self._get()
        rows = parse_exposition(body, cluster=self.cluster, scraped_at=self.clock(), url=self.shown)
        if rows.samples.num_rows == 0:
            raise SourceRejected(SOURCE, self.shown, "the answer held no GPU samples", NO_SAMPLES_FIX)
        return rows

    def _get(self) -> str:
        try:
            response = fetch.get(
                self.session, self.url, within_s=self.timeout_s, max_bytes=int(self.max_body_mib * MIB)
            )
        except fetch.TimedOut as exc:
            raise SourceUnreachable(SOURCE, self.shown, str(exc), UNREACHABLE_FIX) from None
        except fetch.TooLarge as exc:
            raise AnswerTooLarge(SOURCE, self.shown, str(exc), self.max_body_mib, "exporter_max_body_mib") from None
        except requests.ConnectionError as exc:
            raise SourceUnreachable(SOURCE, self.shown, connection_failure(exc), UNREACHABLE_FIX) from exc
        except requests.RequestException as exc:
            reason = _clip(str(exc), 120) or type(exc).__name__
            raise SourceUnreachable(SOURCE, self.shown, reason, UNREACHABLE_FIX) from exc
        if response.status_code >= 400:
            status = f"HTTP {response.status_code} {response.reason}".rstrip()
            raise SourceRejected(SOURCE, self.shown, status, _status_fix(response.status_code))
        return response.content.decode("utf-8", errors="replace")  # the text format is UTF-8, charset given or not


def _status_fix(status: int) -> str:
    if status == 404:
        return "check the path: dcgm-exporter serves its metrics at /metrics"
    if status in (401, 403):
        return "this endpoint needs credentials; point the URL at dcgm-exporter itself (port 9400)"
    if status >= 500:
        return "dcgm-exporter failed to collect: check its logs and that DCGM can see the GPUs"
    return UNREACHABLE_FIX
