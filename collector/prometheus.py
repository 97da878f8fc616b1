"""Prometheus range queries into the warehouse: DCGM series and kube-state-metrics facts, chunked and resumable.

What is read (``/api/v1/query_range``, the HTTP API prometheus-api-client's ``custom_query_range`` wraps):

- the DCGM fields in :data:`DCGM_METRICS`, turned into :class:`collector.dcgm.DcgmPoint` values and then rows by
  :func:`collector.dcgm.rows_from_points` (the one DCGM mapping; ``source="prometheus"``);
- ``kube_node_labels`` into ``nodes`` rows (one per node per UTC date it was seen), see :func:`node_rows`;
- ``kube_pod_owner`` into each pod's workload (its owner; a ReplicaSet gives its Deployment), see
  :func:`pod_workloads`;
- ``kube_pod_container_resource_requests`` for ``nvidia_com_gpu`` and ``nvidia_com_mig_*`` (running pods only), to
  attribute a GPU that dcgm-exporter reports without a pod when exactly one running container on that node
  requests exactly the GPUs of that kind nobody else holds, see :func:`attribute`.

Sampling: every query is ``last_over_time(<selector>[<step> - 1 ms])`` evaluated at ``start, start + step, ...``:
each step carries the newest sample of the step that ends there, and a step without a sample has no point, so a
series that stops is not stretched by Prometheus' 5-minute lookback into minutes the GPU was not seen.

Chunks and the watermark: a window is cut into chunks of at most ``max_points_per_series`` steps (Prometheus refuses
more than 11,000 points per series) and at most ``chunk_s`` seconds. Each chunk is appended with
:func:`warehouse.ingest.append_many` and only then recorded as done in the lake state ``prometheus-<hash>`` (one
document
per URL and cluster, holding the done spans). A re-run with an overlapping window fetches only what is not done, so
a scrape killed anywhere resumes with no gap and no duplicate. Steps newer than ``now - settle_s`` are never
fetched: Prometheus may still be receiving their samples.

Errors: timeouts, refused or dropped connections and HTTP 5xx/429 are retried with exponential backoff (``tries``
attempts); then, and for every other failure, one :class:`SourceUnreachable` or :class:`SourceRejected` line that
names the URL (without any credentials) and the fix. Deadlines: each attempt, headers and body, ends within
``timeout_s``; one query, its retries and the waits between them included, ends within ``2 * timeout_s``. An answer
over ``max_body_mib`` is not read further (:class:`AnswerTooLarge`). Credentials come from the environment only:
``GPULEDGER_PROMETHEUS_TOKEN`` / ``GPULEDGER_PROMETHEUS_TOKEN_FILE`` (bearer), or ``GPULEDGER_PROMETHEUS_USER`` with
``GPULEDGER_PROMETHEUS_PASSWORD`` / ``GPULEDGER_PROMETHEUS_PASSWORD_FILE`` (basic). They are never logged and never
part of an error message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import polars as pl
import pyarrow as pa
import requests

from collector import fetch as bounded
from collector.dcgm import DcgmPoint, rows_from_points, workload_from_pod
from collector.errors import AnswerTooLarge, CollectorError, SourceRejected, SourceUnreachable, connection_failure
from collector.k8s import workload_from_owner
from collector.rows import Rows
from warehouse.ingest import append_many
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, NODES

log = logging.getLogger(__name__)

WHAT = "Prometheus"
SOURCE = "prometheus"
MAX_POINTS_PER_SERIES = 11_000
"""Prometheus answers 400 to a range query whose series would hold more than 11,000 points."""
DCGM_METRICS = (
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
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
)
NODE_LABELS = "kube_node_labels"
POD_OWNER = "kube_pod_owner"
GPU_REQUESTS = 'kube_pod_container_resource_requests{resource=~"nvidia_com_gpu|nvidia_com_mig_.+"}'
RUNNING = 'kube_pod_status_phase{phase="Running"}'
WHOLE_GPU = "nvidia_com_gpu"
MIG_PREFIX = "nvidia_com_mig_"

ENV_TOKEN = "GPULEDGER_PROMETHEUS_TOKEN"
ENV_USER = "GPULEDGER_PROMETHEUS_USER"
ENV_PASSWORD = "GPULEDGER_PROMETHEUS_PASSWORD"
FILE_SUFFIX = "_FILE"

UNREACHABLE_FIX = (
    "check the --prometheus URL and that Prometheus is running "
    "(e.g. `kubectl -n monitoring port-forward svc/prometheus-operated 9090`)"
)
NOT_PROMETHEUS_FIX = (
    "pass Prometheus' base URL (the one whose /api/v1/query_range answers), e.g. http://prometheus:9090"
)
CREDENTIALS_FIX = (
    f"it needs credentials: set {ENV_TOKEN} (or {ENV_TOKEN}{FILE_SUFFIX}) for a bearer token, "
    f"or {ENV_USER} with {ENV_PASSWORD} (or {ENV_PASSWORD}{FILE_SUFFIX}) for basic auth"
)

QUERY_FAILED_FIX = (
    "the server could not evaluate a range query; if it loads too many samples, lower the chunk size or raise "
    "Prometheus' --query.max-samples"
)

Progress = Callable[[int, int], None]
Span = tuple[int, int]
"""[start, end) in whole epoch seconds, both on the step grid."""


class Series(NamedTuple):
    """One series of a range query's answer: its labels (``__name__`` removed) and its (epoch seconds, value)."""

    labels: Mapping[str, str]
    values: list[tuple[float, float]]


@dataclass(frozen=True)
class KubeState:
    """The kube-state-metrics series of one chunk."""

    node_labels: list[Series]
    gpu_requests: list[Series]
    pod_owners: list[Series]


@dataclass(frozen=True)
class ScrapeResult:
    points: int
    """Points (one value of one series at one step) fetched in this run."""
    samples: int
    """gpu_samples rows written (rows already stored are not counted)."""
    allocations: int
    nodes: int
    chunks: int
    """Chunks fetched in this run; a chunk is one range query per metric."""
    queries: int
    watermark: dt.datetime | None
    """End of the newest span done for this URL and cluster (exclusive), after this run."""


# ------------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """How requests authenticate; ``describe`` names the environment variables, never their values."""

    headers: Mapping[str, str]
    auth: tuple[str, str] | None
    describe: str | None

    def __repr__(self) -> str:
        return f"Credentials({self.describe or 'none'})"


def credentials_from_env(env: Mapping[str, str]) -> Credentials:
    """A bearer token (``GPULEDGER_PROMETHEUS_TOKEN[_FILE]``) or basic auth (``GPULEDGER_PROMETHEUS_USER`` plus
    ``GPULEDGER_PROMETHEUS_PASSWORD[_FILE]``); none when neither is set. Setting both is an error."""
    token = _secret(env, ENV_TOKEN)
    user = env.get(ENV_USER) or None
    password = _secret(env, ENV_PASSWORD)
    if token is not None and (user is not None or password is not None):
        raise CollectorError(f"both {ENV_TOKEN} and {ENV_USER}/{ENV_PASSWORD} are set: keep one way to authenticate")
    if token is not None:
        return Credentials({"Authorization": f"Bearer {token}"}, None, f"the bearer token from {ENV_TOKEN}")
    if (user is None) != (password is None):
        missing = ENV_PASSWORD if password is None else ENV_USER
        raise CollectorError(f"basic auth for Prometheus needs {ENV_USER} and {ENV_PASSWORD}: {missing} is not set")
    if user is not None and password is not None:
        return Credentials({}, (user, password), f"the user and password from {ENV_USER}/{ENV_PASSWORD}")
    return Credentials({}, None, None)


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """``name``'s value, else the first line of the file ``name_FILE`` names (a mounted Kubernetes secret)."""
    value = env.get(name)
    if value:
        return value.strip()
    path = env.get(name + FILE_SUFFIX)
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CollectorError(
            f"{name}{FILE_SUFFIX} names {path}, which cannot be read ({exc.strerror or type(exc).__name__}): "
            "fix the path or mount the secret there"
        ) from None
    secret = text.strip()
    if not secret:
        raise CollectorError(f"{name}{FILE_SUFFIX} names {path}, which is empty: put the secret in it")
    return secret


# ------------------------------------------------------------------------------------------------- spans and chunks


def grid_ceil(seconds: float, step_s: int) -> int:
    return math.ceil(seconds / step_s) * step_s


def grid_floor(seconds: float, step_s: int) -> int:
    return math.floor(seconds / step_s) * step_s


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Spans sorted, with overlapping or touching ones joined."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def subtract_spans(window: Span, done: Iterable[Span]) -> list[Span]:
    """The parts of ``window`` no span of ``done`` covers, in time order."""
    todo: list[Span] = []
    cursor, end = window
    for d_start, d_end in merge_spans(done):
        if d_end <= cursor or d_start >= end:
            continue
        if d_start > cursor:
            todo.append((cursor, d_start))
        cursor = max(cursor, d_end)
    if cursor < end:
        todo.append((cursor, end))
    return todo


def plan_chunks(todo: Iterable[Span], *, step_s: int, max_steps: int) -> list[Span]:
    """``todo`` cut into chunks of at most ``max_steps`` steps each (a chunk's query evaluates every step in it)."""
    width = step_s * max(1, max_steps)
    return [(a, min(a + width, end)) for start, end in todo for a in range(start, end, width)]


# ------------------------------------------------------------------------------------------------- kube-state-metrics


def _label(labels: Mapping[str, str], name: str) -> str | None:
    """A kube-state-metrics label, as ``exported_<name>`` when a ServiceMonitor without honorLabels renamed it."""
    return labels.get(f"exported_{name}") or labels.get(name) or None


def capacity_type(labels: Mapping[str, str]) -> str | None:
    """on-demand | spot from the node's labels (Karpenter, EKS managed node groups, GKE), None when unknown."""
    for name in ("label_karpenter_sh_capacity_type", "label_eks_amazonaws_com_capacity_type"):
        value = (labels.get(name) or "").strip().lower().replace("_", "-")
        if value in ("on-demand", "spot"):
            return value
    for name in ("label_cloud_google_com_gke_spot", "label_cloud_google_com_gke_preemptible"):
        if (labels.get(name) or "").strip().lower() == "true":
            return "spot"
    if labels.get("label_cloud_google_com_gke_nodepool"):
        return "on-demand"
    return None


def _first(labels: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def node_row(
    cluster: str,
    node: str,
    date: dt.date,
    labels: Mapping[str, str],
    gpu_model: str | None = None,
    gpu_count: int | None = None,
) -> dict[str, Any]:
    """One ``nodes`` row from a node's ``kube_node_labels`` labels (and what DCGM saw on it that day).

    ``gpu_model`` is DCGM's ``modelName`` when the node's GPUs were seen (the name gpu_samples carries, so the two
    join), else GPU Feature Discovery's ``nvidia.com/gpu.product`` label; ``gpu_count`` is GFD's
    ``nvidia.com/gpu.count`` label, else the GPUs DCGM saw."""
    strategy = labels.get("label_nvidia_com_mig_strategy")
    node_labels = {k.removeprefix("label_"): v for k, v in labels.items() if k.startswith("label_")}
    return {
        "date": date,
        "cluster": cluster,
        "node": node,
        "instance_type": _first(
            labels, "label_node_kubernetes_io_instance_type", "label_beta_kubernetes_io_instance_type"
        ),
        "capacity_type": capacity_type(labels),
        "region": _first(
            labels, "label_topology_kubernetes_io_region", "label_failure_domain_beta_kubernetes_io_region"
        ),
        "zone": _first(labels, "label_topology_kubernetes_io_zone", "label_failure_domain_beta_kubernetes_io_zone"),
        "gpu_model": gpu_model or labels.get("label_nvidia_com_gpu_product") or None,
        "gpu_count": _int_or_none(labels.get("label_nvidia_com_gpu_count")) or gpu_count,
        "mig_strategy": strategy if strategy in ("none", "single", "mixed") else None,
        "labels": json.dumps(node_labels, sort_keys=True, separators=(",", ":")) if node_labels else None,
    }


def _date(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()


def node_rows(node_labels: Iterable[Series], samples: pa.Table, *, cluster: str) -> list[dict[str, Any]]:
    """One ``nodes`` row per node per UTC date it appears on, in ``kube_node_labels`` (its newest labels that day)
    or in gpu_samples (a node kube-state-metrics does not report gets a row with what DCGM saw)."""
    newest: dict[tuple[str, dt.date], tuple[float, Mapping[str, str]]] = {}
    for series in node_labels:
        node = _label(series.labels, "node")
        if node is None:
            continue
        for seconds, _value in series.values:
            key = (node, _date(seconds))
            if key not in newest or seconds > newest[key][0]:
                newest[key] = (seconds, series.labels)
    seen = _gpus_by_node_date(samples)
    rows = []
    for node, date in sorted(newest.keys() | seen.keys()):
        model, count = seen.get((node, date), (None, None))
        labels = newest[(node, date)][1] if (node, date) in newest else {}
        rows.append(node_row(cluster, node, date, labels, model, count))
    return rows


def _gpus_by_node_date(samples: pa.Table) -> dict[tuple[str, dt.date], tuple[str | None, int]]:
    if samples.num_rows == 0:
        return {}
    frame = pl.from_arrow(samples.select(["ts", "node", "gpu_uuid", "gpu_model"]))
    assert isinstance(frame, pl.DataFrame)
    facts = (
        frame.filter(pl.col("node").is_not_null() & (pl.col("node") != ""))
        .group_by("node", pl.col("ts").dt.date().alias("date"))
        .agg(pl.col("gpu_model").drop_nulls().first(), pl.col("gpu_uuid").n_unique().alias("gpus"))
    )
    return {(r["node"], r["date"]): (r["gpu_model"], r["gpus"]) for r in facts.iter_rows(named=True)}


def owner_workload(owner_kind: str | None, owner_name: str | None, pod: str) -> str:
    """A pod's workload from its ``kube_pod_owner`` labels: the owner (a ReplicaSet resolves to its Deployment by
    dropping the pod-template hash); a pod without owner (``<none>``) falls back to its name's generated parts."""
    if not owner_kind or not owner_name or "<none>" in (owner_kind, owner_name):
        return workload_from_pod(pod)
    return workload_from_owner(owner_kind, owner_name, pod)


def pod_workloads(pod_owners: Iterable[Series]) -> dict[tuple[str, str], str]:
    """(namespace, pod) -> workload from ``kube_pod_owner`` series; the controller owner wins over other owners."""
    chosen: dict[tuple[str, str], tuple[bool, str]] = {}
    for series in pod_owners:
        namespace, pod = _label(series.labels, "namespace"), _label(series.labels, "pod")
        if namespace is None or pod is None or not series.values:
            continue
        controller = series.labels.get("owner_is_controller") == "true"
        previous = chosen.get((namespace, pod))
        if previous is None or (controller and not previous[0]):
            workload = owner_workload(series.labels.get("owner_kind"), series.labels.get("owner_name"), pod)
            chosen[(namespace, pod)] = (controller, workload)
    return {key: workload for key, (_controller, workload) in chosen.items()}


_REQUEST_SCHEMA: dict[str, pl.DataType] = {
    "node": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "namespace": pl.String(),
    "pod": pl.String(),
    "container": pl.String(),
    "kind": pl.String(),
    "amount": pl.Float64(),
}


def _requests_frame(gpu_requests: Iterable[Series], when: Callable[[float], dt.datetime]) -> pl.DataFrame:
    rows: dict[str, list[Any]] = {name: [] for name in _REQUEST_SCHEMA}
    for series in gpu_requests:
        labels = series.labels
        node, pod, resource = _label(labels, "node"), _label(labels, "pod"), labels.get("resource")
        if not node or not pod or not resource:
            continue
        for seconds, value in series.values:
            for name, item in (
                ("node", node),
                ("ts", when(seconds)),
                ("namespace", _label(labels, "namespace")),
                ("pod", pod),
                ("container", _label(labels, "container")),
                ("kind", resource),
                ("amount", value),
            ):
                rows[name].append(item)
    return pl.DataFrame(rows, schema=_REQUEST_SCHEMA)


def _device_kind(single_strategy_nodes: Iterable[str]) -> pl.Expr:
    """The extended resource a device is requested as: ``nvidia_com_gpu`` for a whole GPU (and for MIG instances
    under the ``single`` strategy), ``nvidia_com_mig_<profile>`` (sanitized as kube-state-metrics does) for MIG."""
    profile = pl.col("mig_profile")
    mig = pl.lit(MIG_PREFIX) + profile.str.replace_all(r"[^A-Za-z0-9_]", "_")
    single = pl.col("node").is_in(list(single_strategy_nodes))
    return pl.when(profile.is_null() | single).then(pl.lit(WHOLE_GPU)).otherwise(mig).alias("kind")


def attribute(
    rows: Rows,
    gpu_requests: Iterable[Series],
    workloads: Mapping[tuple[str, str], str],
    *,
    cluster: str,
    source: str = SOURCE,
    when: Callable[[float], dt.datetime] | None = None,
    single_strategy_nodes: Iterable[str] = (),
) -> pa.Table:
    """``rows.allocations`` with each pod's owner as its workload, plus the allocations that GPU requests prove.

    dcgm-exporter names the pod holding a GPU only when it can read the kubelet's pod-resources socket. For a GPU
    or MIG instance it reports without a pod, at one step, on one node: when exactly one running container on that
    node requests that kind of device (``nvidia_com_gpu`` or ``nvidia_com_mig_<profile>``) besides the pods DCGM
    already names there, and it requests exactly as many as are left unnamed, those are its. Anything less certain
    stays unattributed (the GPU reads as unallocated, never as someone's)."""
    allocations = pl.from_arrow(rows.allocations)
    samples = pl.from_arrow(rows.samples.select(["ts", "node", "gpu_uuid", "mig_instance_id", "mig_profile"]))
    assert isinstance(allocations, pl.DataFrame) and isinstance(samples, pl.DataFrame)
    requests_frame = _requests_frame(gpu_requests, when or _timestamp)
    filled = _fill(samples, allocations, requests_frame, single_strategy_nodes) if requests_frame.height else None
    if filled is not None and filled.height:
        filled = filled.with_columns(pl.lit(cluster).alias("cluster"), pl.lit(source).alias("source"))
        allocations = pl.concat([allocations, filled], how="diagonal_relaxed").select(GPU_ALLOCATIONS.columns)
    if workloads and allocations.height:
        owners = pl.DataFrame(
            {
                "namespace": [k[0] for k in workloads],
                "pod": [k[1] for k in workloads],
                "owner_workload": list(workloads.values()),
            },
            schema={"namespace": pl.String, "pod": pl.String, "owner_workload": pl.String},
        )
        allocations = (
            allocations.join(owners, on=["namespace", "pod"], how="left", maintain_order="left")
            .with_columns(pl.coalesce("owner_workload", "workload").alias("workload"))
            .drop("owner_workload")
        )
    return allocations.to_arrow().cast(GPU_ALLOCATIONS.schema)


def _fill(
    samples: pl.DataFrame,
    allocations: pl.DataFrame,
    requests_frame: pl.DataFrame,
    single_strategy_nodes: Iterable[str],
) -> pl.DataFrame:
    key = ["gpu_uuid", "mig_instance_id", "ts"]
    parents = samples.filter(pl.col("mig_instance_id").is_not_null()).select("gpu_uuid").unique()
    devices = (
        samples.join(parents.with_columns(pl.lit(True).alias("mig_parent")), on="gpu_uuid", how="left")
        .filter(pl.col("mig_instance_id").is_not_null() | pl.col("mig_parent").is_null())
        .with_columns(_device_kind(single_strategy_nodes))
    )
    free = devices.join(allocations.select(key).unique(), on=key, how="anti", nulls_equal=True)
    held = allocations.select("node", "ts", "namespace", "pod").unique()
    wanting = requests_frame.join(held, on=["node", "ts", "namespace", "pod"], how="anti", nulls_equal=True)
    sole = (
        wanting.group_by("node", "ts", "kind")
        .agg(pl.len().alias("containers"), pl.col("namespace", "pod", "container", "amount").first())
        .filter(pl.col("containers") == 1)
    )
    free_counts = free.group_by("node", "ts", "kind").agg(pl.len().alias("free"))
    proven = sole.join(free_counts, on=["node", "ts", "kind"]).filter(pl.col("amount") == pl.col("free"))
    filled = free.join(proven.select("node", "ts", "kind", "namespace", "pod", "container"), on=["node", "ts", "kind"])
    pods = filled.get_column("pod").unique().to_list()
    guessed = {pod: workload_from_pod(pod) for pod in pods}
    return filled.select(
        "ts",
        "node",
        "gpu_uuid",
        "mig_instance_id",
        "namespace",
        "pod",
        "container",
        pl.col("pod").replace_strict(guessed, return_dtype=pl.String).alias("workload"),
    ).sort("gpu_uuid", "mig_instance_id", "ts", nulls_last=True)


def kube_rows(rows: Rows, kube: KubeState, *, cluster: str, when: Callable[[float], dt.datetime] | None = None) -> Rows:
    """DCGM rows completed with kube-state-metrics: owners as workloads, proven allocations, and node rows."""
    when = when or _timestamp
    nodes = node_rows(kube.node_labels, rows.samples, cluster=cluster)
    single = {row["node"] for row in nodes if row["mig_strategy"] == "single"}
    workloads = pod_workloads(kube.pod_owners)
    allocations = attribute(
        rows, kube.gpu_requests, workloads, cluster=cluster, when=when, single_strategy_nodes=single
    )
    return Rows(rows.samples, allocations, pa.Table.from_pylist(nodes, schema=NODES.schema))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _timestamp(seconds: float) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=round(seconds * 1_000_000))


class _Timestamps:
    """Epoch seconds to aware datetimes, cached: a chunk's points share a few hundred step times."""

    def __init__(self) -> None:
        self._cache: dict[float, dt.datetime] = {}

    def __call__(self, seconds: float) -> dt.datetime:
        value = self._cache.get(seconds)
        if value is None:
            value = self._cache[seconds] = _timestamp(seconds)
        return value


def dcgm_points(
    metric: str, result: Iterable[Mapping[str, Any]], when: Callable[[float], dt.datetime]
) -> list[DcgmPoint]:
    """One DcgmPoint per finite value of a range query's ``result`` (its series as Prometheus' JSON has them)."""
    points: list[DcgmPoint] = []
    append = points.append
    for item in result:
        labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
        for seconds, text in item["values"]:
            value = float(text)
            if value - value == 0.0:  # finite: NaN and infinities give NaN
                append(DcgmPoint(metric, labels, when(seconds), value))
    return points


# ------------------------------------------------------------------------------------------------- the scraper


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a chunk's points are built.

    A chunk creates hundreds of thousands of small, acyclic objects (JSON lists, DcgmPoints); each batch of them
    triggers a collection that finds nothing to free, which costs about a third of the scrape's CPU time. Reference
    counting still frees everything; the collector runs as usual once the chunk is built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PrometheusScraper:
    """Scrapes DCGM and kube-state-metrics series from one Prometheus into a warehouse, chunk by chunk.

    ``session``: the requests.Session to use (tests pass a counting one); ``headers``: extra request headers;
    ``env``: where credentials are read (default ``os.environ``); ``clock`` and ``sleep``: injectable time.
    """

    def __init__(
        self,
        url: str,
        *,
        cluster: str,
        session: requests.Session | None = None,
        headers: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        step_s: int = 60,
        max_points_per_series: int = MAX_POINTS_PER_SERIES,
        chunk_s: int = 6 * 3600,
        settle_s: int = 120,
        timeout_s: float = 60.0,
        tries: int = 5,
        backoff_s: float = 0.5,
        max_body_mib: float = 256.0,
    ) -> None:
        if not (isinstance(step_s, int) and step_s >= 1):
            raise ValueError(f"step_s must be a whole number of seconds >= 1, not {step_s!r}")
        if not 1 <= max_points_per_series <= MAX_POINTS_PER_SERIES:
            raise ValueError(f"max_points_per_series must be within 1..{MAX_POINTS_PER_SERIES}")
        if tries < 1:
            raise ValueError("tries must be at least 1")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceUnreachable(WHAT, bounded.display_url(url) or "''", "not an http(s) URL", NOT_PROMETHEUS_FIX)
        self.base = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path.rstrip("/"), "", ""))
        self.url = bounded.display_url(url)
        self.cluster = cluster
        self.session = session if session is not None else requests.Session()
        self.credentials = self._credentials(parts, os.environ if env is None else env)
        self.headers = {"Accept": "application/json", **(headers or {}), **self.credentials.headers}
        self.clock = clock
        self.sleep = sleep
        self.step_s = step_s
        self.max_steps = min(max_points_per_series, max(1, chunk_s // step_s))
        self.settle_s = settle_s
        self.timeout_s = timeout_s
        self.tries = tries
        self.backoff_s = backoff_s
        self.max_body_mib = max_body_mib
        self.queries = 0

    def __repr__(self) -> str:
        return f"PrometheusScraper({self.url!r}, cluster={self.cluster!r}, auth={self.credentials.describe or 'none'})"

    @staticmethod
    def _credentials(parts: SplitResult, env: Mapping[str, str]) -> Credentials:
        found = credentials_from_env(env)
        if found.describe is None and parts.username:
            return Credentials({}, (parts.username, parts.password or ""), "the user and password in the URL")
        return found

    # ----------------------------------------------------------------------------------------- state

    @property
    def state_name(self) -> str:
        digest = hashlib.sha256(f"{self.base}\n{self.cluster}".encode()).hexdigest()[:16]
        return f"prometheus-{digest}"

    def done_spans(self, lake: Lake) -> list[Span]:
        state = lake.read_state(self.state_name) or {}
        return merge_spans((int(a), int(b)) for a, b in state.get("done", []))

    def _mark_done(self, lake: Lake, span: Span) -> list[Span]:
        done = merge_spans([*self.done_spans(lake), span])
        lake.write_state(
            self.state_name,
            {
                "url": self.url,
                "cluster": self.cluster,
                "step_s": self.step_s,
                "done": [list(s) for s in done],
                "watermark": _iso(done[-1][1]),
            },
        )
        return done

    # ----------------------------------------------------------------------------------------- planning

    def plan(self, lake: Lake, start: dt.datetime, end: dt.datetime) -> list[Span]:
        """The chunks a scrape of [start, end) would fetch now: steps on the grid, minus what is done, minus the
        steps newer than ``now - settle_s``. Naive datetimes are taken as UTC."""
        if end <= start:
            raise ValueError(f"the window must end after it starts ({start.isoformat()} >= {end.isoformat()})")
        newest = grid_floor(_seconds(self.clock()) - self.settle_s, self.step_s)
        window = (grid_ceil(_seconds(start), self.step_s), min(grid_ceil(_seconds(end), self.step_s), newest))
        if window[1] <= window[0]:
            return []
        todo = subtract_spans(window, self.done_spans(lake))
        return plan_chunks(todo, step_s=self.step_s, max_steps=self.max_steps)

    # ----------------------------------------------------------------------------------------- scraping

    def scrape(
        self, lake: Lake, start: dt.datetime, end: dt.datetime, *, progress: Progress | None = None
    ) -> ScrapeResult:
        """Fetch [start, end) into ``lake``, skipping what an earlier run stored; each chunk is stored, then marked."""
        chunks = self.plan(lake, start, end)
        queries_before = self.queries
        points = samples = allocations = nodes = 0
        if progress:
            progress(0, len(chunks))
        for i, span in enumerate(chunks):
            rows, fetched = self.fetch(span)
            points += fetched
            with lake.writing():
                written = append_many(lake, rows.batches())
                self._mark_done(lake, span)
            samples += written[0].rows_written
            allocations += written[1].rows_written
            nodes += written[2].rows_written
            log.info("prometheus: %s chunk %d/%d stored (%d points)", self.url, i + 1, len(chunks), fetched)
            if progress:
                progress(i + 1, len(chunks))
        done = self.done_spans(lake)
        watermark = _EPOCH + dt.timedelta(seconds=done[-1][1]) if done else None
        return ScrapeResult(points, samples, allocations, nodes, len(chunks), self.queries - queries_before, watermark)

    def fetch(self, span: Span) -> tuple[Rows, int]:
        """One chunk's rows (DCGM and kube-state-metrics) and the number of points fetched."""
        with _without_cyclic_gc():
            return self._fetch(span)

    def _fetch(self, span: Span) -> tuple[Rows, int]:
        when = _Timestamps()
        dcgm: list[DcgmPoint] = []
        for metric in DCGM_METRICS:
            result = self.query_range_json(self._last(metric), span)
            dcgm.extend(_parsed(self.url, functools.partial(dcgm_points, metric, when=when), result))
        node_labels = self.query_range(self._last(NODE_LABELS), span)
        owners = self.query_range(self._last(POD_OWNER), span)
        running = f"({self._last(GPU_REQUESTS)}) and on(namespace, pod) ({self._last(RUNNING)} == 1)"
        gpu_requests = self.query_range(running, span)
        kube = KubeState(node_labels, gpu_requests, owners)
        points = len(dcgm) + sum(len(s.values) for group in (node_labels, owners, gpu_requests) for s in group)
        rows = rows_from_points(dcgm, cluster=self.cluster, source=SOURCE)
        return kube_rows(rows, kube, cluster=self.cluster, when=when), points

    def _last(self, selector: str) -> str:
        """The newest sample within the step that ends at each evaluation time (never an older one)."""
        return f"last_over_time({selector}[{self.step_s * 1000 - 1}ms])"

    def query_range(self, query: str, span: Span) -> list[Series]:
        """``query`` evaluated at every step of ``span`` (its end excluded), as series."""
        return _parsed(self.url, _series, self.query_range_json(query, span))

    def query_range_json(self, query: str, span: Span) -> list[dict[str, Any]]:
        """The ``result`` list of ``query``'s range query over ``span``, as Prometheus' JSON has it."""
        start, end = span
        params = {"query": query, "start": str(start), "end": str(end - self.step_s), "step": str(self.step_s)}
        body = self._get("/api/v1/query_range", params)
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise SourceRejected(WHAT, self.url, "a range query answered without a matrix", NOT_PROMETHEUS_FIX)
        result: list[dict[str, Any]] = data["result"]
        return result

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        """One query's answer. Each try ends within ``timeout_s``; no try or wait starts that would end past
        ``2 * timeout_s`` from the first, so a server that never answers ends the query there."""
        url = self.base + path
        deadline = time.monotonic() + 2 * self.timeout_s
        for attempt in range(1, self.tries + 1):
            failure = self._attempt(url, path, params, min(self.timeout_s, deadline - time.monotonic()))
            if not isinstance(failure, _Retry):
                return failure
            pause = self.backoff_s * 2 ** (attempt - 1)
            if attempt == self.tries:
                raise SourceUnreachable(WHAT, self.url, f"{failure.reason}, after {attempt} tries", failure.fix)
            if time.monotonic() + pause >= deadline:
                tries = f"{attempt} tries (a query may take {2 * self.timeout_s:g} s with its retries)"
                raise SourceUnreachable(WHAT, self.url, f"{failure.reason}, after {tries}", failure.fix)
            log.info("prometheus: %s %s; retrying in %.1f s", self.url, failure.reason, pause)
            self.sleep(pause)
        raise AssertionError("unreachable")

    def _attempt(self, url: str, path: str, params: Mapping[str, str], within_s: float) -> Any:
        """The decoded JSON answer, a _Retry for a transient failure, or raise for a permanent one."""
        self.queries += 1
        try:
            response = bounded.get(
                self.session,
                url,
                within_s=within_s,
                max_bytes=int(self.max_body_mib * (1 << 20)),
                params=params,
                headers=self.headers,
                auth=self.credentials.auth,
            )
        except bounded.TimedOut as exc:
            what = "the answer did not finish" if exc.started else "no answer"
            return _Retry(f"{what} within {self.timeout_s:g} s", UNREACHABLE_FIX)
        except bounded.TooLarge as exc:
            raise AnswerTooLarge(WHAT, self.url, str(exc), self.max_body_mib, "prometheus_max_body_mib") from None
        except requests.ConnectionError as exc:
            return _Retry(connection_failure(exc), UNREACHABLE_FIX)
        except requests.RequestException as exc:
            raise SourceUnreachable(WHAT, self.url, type(exc).__name__, UNREACHABLE_FIX) from None
        return self._answer(response, path)

    def _answer(self, response: bounded.Reply, path: str) -> Any:
        status = response.status_code
        if status in (401, 403):
            fix = CREDENTIALS_FIX
            if self.credentials.describe is not None:
                fix = f"{self.credentials.describe} was not accepted: renew it or check what it may read"
            raise SourceRejected(WHAT, self.url, _status(response), fix)
        if status >= 500 or status == 429:
            return _Retry(_status(response), "check Prometheus' health and logs, then re-run: finished chunks are kept")
        body = _json(response)
        if status in (400, 422) and isinstance(body, dict) and body.get("status") == "error":
            reason = f"{_status(response)}: {_one_line(str(body.get('error')))}"
            raise SourceRejected(WHAT, self.url, reason, QUERY_FAILED_FIX)
        if status == 404:
            raise SourceRejected(WHAT, self.url, f"HTTP 404 for {path}", NOT_PROMETHEUS_FIX)
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            raise SourceRejected(
                WHAT, self.url, f"{_status(response)}, not a Prometheus API answer", NOT_PROMETHEUS_FIX
            )
        return body


@dataclass(frozen=True)
class _Retry:
    reason: str
    fix: str


def _status(response: bounded.Reply) -> str:
    return f"HTTP {response.status_code} {_one_line(response.reason or '')}".rstrip()


def _json(response: bounded.Reply) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _series(result: list[dict[str, Any]]) -> list[Series]:
    return [
        Series(
            {k: v for k, v in item["metric"].items() if k != "__name__"},
            [(float(t), float(v)) for t, v in item["values"]],
        )
        for item in result
    ]


T = TypeVar("T")


def _parsed(url: str, parse: Callable[[list[dict[str, Any]]], T], result: list[dict[str, Any]]) -> T:
    """``parse(result)``, or SourceRejected when the series are not shaped as Prometheus' API shapes them."""
    try:
        return parse(result)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"a range query answered with malformed series ({type(exc).__name__})"
        raise SourceRejected(WHAT, url, reason, NOT_PROMETHEUS_FIX) from None


def _seconds(when: dt.datetime) -> float:
    """Epoch seconds of ``when``; a naive datetime is taken as UTC (as ``analysis.window.parse_time`` does)."""
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _iso(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).isoformat()
