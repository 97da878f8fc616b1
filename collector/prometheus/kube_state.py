"""kube-state-metrics series into warehouse rows: node rows, pod owners as workloads, GPU requests as allocations.

- ``kube_node_labels`` into ``nodes`` rows (one per node per UTC date it was seen), see :func:`node_rows`;
- ``kube_pod_owner``, climbed through ``kube_replicaset_owner`` and ``kube_job_owner``, into each pod's owner chain
  up to its top-level controller (ReplicaSet -> Deployment, Job -> CronJob, a custom controller by its kind), the
  workload being that controller, see :func:`pod_owners`;
- ``kube_pod_container_resource_requests`` for ``nvidia_com_gpu`` and ``nvidia_com_mig_*`` (running pods only), to
  attribute a GPU that dcgm-exporter reports without a pod when exactly one running container on that node
  requests exactly the GPUs of that kind nobody else holds, see :func:`attribute`;
- ``kube_pod_container_resource_requests`` for ``cpu`` (unit ``core``) and ``memory`` (unit ``byte``), summed over the
  pod's containers (init containers are ``kube_pod_init_container_resource_requests``, not read), onto the pod's
  allocation rows at each step, see :func:`with_requests`;
- where kube-state-metrics' series are missing, the node agents' own (:mod:`collector.metrics`):
  ``gpuledger_node_info`` for a node's row, ``gpuledger_pod_owner`` for a pod's owner chain and
  ``gpuledger_pod_requests`` for its CPU and memory requests (kube-state-metrics wins where both say something: per
  column of a node's row, per pod for owners, per pod and step for requests).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from collector.metrics import NODE_INFO_LABELS
from collector.prometheus.series import SOURCE, Series, timestamp
from collector.rows import Rows
from collector.workloads import ObjectRef, Owner, owner_chain, workload_from_owner, workload_from_pod
from warehouse.schema import CAPACITY_TYPES, GPU_ALLOCATIONS, NODES

NODE_LABELS = "kube_node_labels"
NODE_INFO = "kube_node_info"
"""Its ``provider_id`` label is the node's ``spec.providerID`` (``aws:///us-east-1a/i-0abc``), what a bill names."""
POD_OWNER = "kube_pod_owner"
REPLICASET_OWNER = "kube_replicaset_owner"
"""Labels ``namespace``, ``replicaset``, ``owner_kind``, ``owner_name``, ``owner_is_controller``
(kube-state-metrics ``docs/replicaset-metrics.md``)."""
JOB_OWNER = "kube_job_owner"
"""Labels ``namespace``, ``job_name`` (``exported_job`` where an older kube-state-metrics' ``job`` label met
Prometheus' own), ``owner_kind``, ``owner_name``, ``owner_is_controller`` (``docs/job-metrics.md``)."""
OWNER_COLUMNS = ("owner_kind", "owner_name", "owner_chain")
GPU_REQUESTS = 'kube_pod_container_resource_requests{resource=~"nvidia_com_gpu|nvidia_com_mig_.+"}'
RUNNING = 'kube_pod_status_phase{phase="Running"}'
CPU_MEMORY_REQUESTS = 'kube_pod_container_resource_requests{resource=~"cpu|memory"}'
"""Labels ``namespace``, ``pod``, ``container``, ``node``, ``resource`` (``cpu``, ``memory``), ``unit`` (``core``,
``byte``) (kube-state-metrics ``docs/metrics/workload/pod-metrics.md``)."""
REQUEST_LABELS = ("namespace", "pod", "exported_namespace", "exported_pod", "resource")
"""What a pod's CPU and memory requests are summed by (its containers' series summed away)."""
WHOLE_GPU = "nvidia_com_gpu"
MIG_PREFIX = "nvidia_com_mig_"


@dataclass(frozen=True)
class KubeState:
    """The kube-state-metrics series of one chunk."""

    node_labels: list[Series]
    gpu_requests: list[Series]
    pod_owners: list[Series]
    node_info: list[Series] = field(default_factory=list)
    replicaset_owners: list[Series] = field(default_factory=list)
    job_owners: list[Series] = field(default_factory=list)
    resource_requests: list[Series] = field(default_factory=list)
    """``kube_pod_container_resource_requests`` for cpu and memory, per pod (see :data:`REQUEST_LABELS`)."""
    agent_nodes: list[Series] = field(default_factory=list)
    """The node agents' ``gpuledger_node_info``: what a node without ``kube_node_labels`` is known by."""
    agent_owners: list[Series] = field(default_factory=list)
    """The node agents' ``gpuledger_pod_owner``: the owner of a pod without ``kube_pod_owner``."""
    agent_requests: list[Series] = field(default_factory=list)
    """The node agents' ``gpuledger_pod_requests``: the requests of a pod without CPU and memory request series."""


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
    provider_id: str | None = None,
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
        "provider_id": provider_id,
    }


def _date(seconds: float) -> dt.date:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).date()


def node_rows(
    node_labels: Iterable[Series],
    samples: pa.Table,
    *,
    cluster: str,
    node_info: Iterable[Series] = (),
    agent_nodes: Iterable[Series] = (),
) -> list[dict[str, Any]]:
    """One ``nodes`` row per node per UTC date it appears on, in ``kube_node_labels`` (its newest labels that day),
    in the node agent's ``gpuledger_node_info`` or in gpu_samples (a node nobody describes gets a row with what DCGM
    saw); ``provider_id`` from the node's ``kube_node_info``. What kube-state-metrics leaves null (all of it, for a
    node it does not report) is taken from ``gpuledger_node_info`` that day (:func:`with_agent_facts`)."""
    provider_ids = {
        node: pid
        for series in node_info
        if (node := _label(series.labels, "node")) is not None and (pid := series.labels.get("provider_id"))
    }
    newest = _newest_by_node_date(node_labels)
    agent = _newest_by_node_date(agent_nodes)
    seen = _gpus_by_node_date(samples)
    rows = []
    for node, date in sorted(newest.keys() | agent.keys() | seen.keys()):
        model, count = seen.get((node, date), (None, None))
        labels = newest.get((node, date), {})
        facts = agent.get((node, date), {})
        count = _int_or_none(facts.get("gpu_count")) or count
        row = node_row(cluster, node, date, labels, model, count, provider_ids.get(node))
        rows.append(with_agent_facts(row, facts))
    return rows


def _newest_by_node_date(series_list: Iterable[Series]) -> dict[tuple[str, dt.date], Mapping[str, str]]:
    """(node, UTC date) -> the labels of the node's newest sample that day."""
    newest: dict[tuple[str, dt.date], tuple[float, Mapping[str, str]]] = {}
    for series in series_list:
        node = _label(series.labels, "node")
        if node is None:
            continue
        for seconds, _value in series.values:
            key = (node, _date(seconds))
            if key not in newest or seconds > newest[key][0]:
                newest[key] = (seconds, series.labels)
    return {key: labels for key, (_seconds, labels) in newest.items()}


_AGENT_ALLOWED: dict[str, tuple[str, ...]] = {
    "capacity_type": CAPACITY_TYPES,
    "mig_strategy": NODES.allowed["mig_strategy"],
}


def with_agent_facts(row: dict[str, Any], facts: Mapping[str, str]) -> dict[str, Any]:
    """``row`` with the columns it leaves null taken from the node agent's ``gpuledger_node_info`` labels ``facts``
    (a value the warehouse would refuse, such as an unknown capacity type, is left out)."""
    filled = dict(row)
    for column in NODE_INFO_LABELS:
        value = facts.get(column) or None
        if filled.get(column) is not None or value is None:
            continue
        if column == "gpu_count":
            filled[column] = _int_or_none(value)
        elif value in _AGENT_ALLOWED.get(column, (value,)):
            filled[column] = value
    return filled


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


def pod_workloads(owners: Iterable[Series]) -> dict[tuple[str, str], str]:
    """(namespace, pod) -> workload from ``kube_pod_owner`` series alone (see :func:`pod_owners`)."""
    return {key: owner.workload for key, owner in pod_owners(owners).items()}


def _owner_ref(labels: Mapping[str, str]) -> ObjectRef | None:
    kind, name = labels.get("owner_kind"), labels.get("owner_name")
    if not kind or not name or "<none>" in (kind, name):
        return None
    return kind, name


def _controllers(
    series_list: Iterable[Series], object_label: Callable[[Mapping[str, str]], str | None]
) -> dict[tuple[str, str], ObjectRef | None]:
    """(namespace, object) -> its owner from one ``kube_*_owner`` metric; the controller owner wins over other
    owners, and ``<none>`` (no owner) is kept as None."""
    chosen: dict[tuple[str, str], tuple[bool, ObjectRef | None]] = {}
    for series in series_list:
        namespace, name = _label(series.labels, "namespace"), object_label(series.labels)
        if namespace is None or name is None or not series.values:
            continue
        controller = series.labels.get("owner_is_controller") == "true"
        previous = chosen.get((namespace, name))
        if previous is None or (controller and not previous[0]):
            chosen[(namespace, name)] = (controller, _owner_ref(series.labels))
    return {key: ref for key, (_controller, ref) in chosen.items()}


def pod_owners(
    pods: Iterable[Series], replicaset_owners: Iterable[Series] = (), job_owners: Iterable[Series] = ()
) -> dict[tuple[str, str], Owner]:
    """(namespace, pod) -> its owner chain up to the top-level controller, from ``kube_pod_owner`` climbed through
    ``kube_replicaset_owner`` (ReplicaSet -> Deployment) and ``kube_job_owner`` (Job -> CronJob, or a custom
    controller such as a JobSet); a pod owned directly by a custom resource (PyTorchJob, RayCluster, Workflow...)
    has that resource, named by its kind, as its top-level controller. See :func:`collector.workloads.owner_chain`."""
    parents: dict[tuple[str, str, str], ObjectRef | None] = {}
    for (namespace, name), ref in _controllers(replicaset_owners, lambda lb: _label(lb, "replicaset")).items():
        parents[(namespace, "ReplicaSet", name)] = ref
    for (namespace, name), ref in _controllers(
        job_owners, lambda lb: _label(lb, "job_name") or lb.get("exported_job") or None
    ).items():
        parents[(namespace, "Job", name)] = ref
    owners = _controllers(pods, lambda lb: _label(lb, "pod"))
    return {(ns, pod): owner_chain(ns, pod, ref, parents) for (ns, pod), ref in owners.items()}


def agent_pod_owners(series_list: Iterable[Series]) -> dict[tuple[str, str], Owner]:
    """(namespace, pod) -> its owner chain as the node agent read it from its kubelet's pod list
    (``gpuledger_pod_owner``, its newest series), the workload given by the chain as :func:`pod_owners` gives it
    (``Pod<-ReplicaSet/x<-Deployment/y`` -> ``y``; a chain of one owner is read from its name, a Job's run giving
    its CronJob's name)."""
    newest: dict[tuple[str, str], tuple[float, Owner]] = {}
    for series in series_list:
        namespace, pod = _label(series.labels, "namespace"), _label(series.labels, "pod")
        ref = _owner_ref(series.labels)
        if namespace is None or pod is None or ref is None or not series.values:
            continue
        last = max(seconds for seconds, _value in series.values)
        if (namespace, pod) not in newest or last > newest[(namespace, pod)][0]:
            owner = _agent_owner(namespace, pod, ref, series.labels.get("owner_chain") or None)
            newest[(namespace, pod)] = (last, owner)
    return {key: owner for key, (_last, owner) in newest.items()}


def _agent_owner(namespace: str, pod: str, top: ObjectRef, chain: str | None) -> Owner:
    """The Owner an agent's ``owner_chain`` (``Pod<-Kind/name<-...``, ending at ``top``) gives, climbed as
    :func:`collector.workloads.owner_chain` climbs; a missing or unreadable chain leaves the workload to
    :func:`owner_workload`."""
    refs: list[ObjectRef] = []
    for link in (chain or "").split("<-")[1:]:
        kind, _, name = link.partition("/")
        refs.append((kind, name))
    if not chain or not chain.startswith("Pod<-") or not refs or refs[-1] != top or not all(all(r) for r in refs):
        return Owner(owner_workload(*top, pod), *top, chain)
    parents = {(namespace, *child): parent for child, parent in itertools.pairwise(refs)}
    return owner_chain(namespace, pod, refs[0], parents)


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
    workloads: Mapping[tuple[str, str], Owner | str],
    *,
    cluster: str,
    source: str = SOURCE,
    when: Callable[[float], dt.datetime] | None = None,
    single_strategy_nodes: Iterable[str] = (),
) -> pa.Table:
    """``rows.allocations`` with each pod's owner chain and workload (``workloads``: an :class:`Owner`, or a bare
    workload name), plus the allocations that GPU requests prove.

    dcgm-exporter names the pod holding a GPU only when it can read the kubelet's pod-resources socket. For a GPU
    or MIG instance it reports without a pod, at one step, on one node: when exactly one running container on that
    node requests that kind of device (``nvidia_com_gpu`` or ``nvidia_com_mig_<profile>``) besides the pods DCGM
    already names there, and it requests exactly as many as are left unnamed, those are its. Anything less certain
    stays unattributed (the GPU reads as unallocated, never as someone's)."""
    allocations = pl.from_arrow(rows.allocations)
    samples = pl.from_arrow(rows.samples.select(["ts", "node", "gpu_uuid", "mig_instance_id", "mig_profile"]))
    assert isinstance(allocations, pl.DataFrame) and isinstance(samples, pl.DataFrame)
    requests_frame = _requests_frame(gpu_requests, when or timestamp)
    filled = _fill(samples, allocations, requests_frame, single_strategy_nodes) if requests_frame.height else None
    if filled is not None and filled.height:
        filled = filled.with_columns(pl.lit(cluster).alias("cluster"), pl.lit(source).alias("source"))
        allocations = pl.concat([allocations, filled], how="diagonal_relaxed").select(GPU_ALLOCATIONS.columns)
    if workloads and allocations.height:
        known = {key: Owner(value) if isinstance(value, str) else value for key, value in workloads.items()}
        owners = pl.DataFrame(
            {
                "namespace": [k[0] for k in known],
                "pod": [k[1] for k in known],
                "known_workload": [o.workload for o in known.values()],
                "known_owner_kind": [o.kind for o in known.values()],
                "known_owner_name": [o.name for o in known.values()],
                "known_owner_chain": [o.chain for o in known.values()],
            },
            schema={"namespace": pl.String, "pod": pl.String}
            | {f"known_{c}": pl.String for c in ("workload", *OWNER_COLUMNS)},
        )
        allocations = (
            allocations.join(owners, on=["namespace", "pod"], how="left", maintain_order="left")
            .with_columns([pl.coalesce(f"known_{c}", c).alias(c) for c in ("workload", *OWNER_COLUMNS)])
            .drop([f"known_{c}" for c in ("workload", *OWNER_COLUMNS)])
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


_POD_REQUEST_SCHEMA: dict[str, pl.DataType] = {
    "namespace": pl.String(),
    "pod": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "resource": pl.String(),
    "amount": pl.Float64(),
}


def pod_requests(requests: Iterable[Series], when: Callable[[float], dt.datetime]) -> pl.DataFrame:
    """(namespace, pod, ts) -> ``cpu_request`` (vCPUs) and ``memory_request_bytes``: each pod's requests summed
    over its containers at each step; a resource the pod's containers do not request is null."""
    rows: dict[str, list[Any]] = {name: [] for name in _POD_REQUEST_SCHEMA}
    for series in requests:
        namespace, pod = _label(series.labels, "namespace"), _label(series.labels, "pod")
        resource = series.labels.get("resource")
        if not namespace or not pod or resource not in ("cpu", "memory"):
            continue
        for seconds, value in series.values:
            for name, item in (
                ("namespace", namespace),
                ("pod", pod),
                ("ts", when(seconds)),
                ("resource", resource),
                ("amount", value),
            ):
                rows[name].append(item)
    summed = (
        pl.DataFrame(rows, schema=_POD_REQUEST_SCHEMA)
        .group_by("namespace", "pod", "ts")
        .agg(
            pl.col("amount").filter(pl.col("resource") == "cpu").sum().alias("cpu_request"),
            pl.col("amount").filter(pl.col("resource") == "memory").sum().alias("memory"),
            (pl.col("resource") == "cpu").any().alias("has_cpu"),
            (pl.col("resource") == "memory").any().alias("has_memory"),
        )
    )
    return summed.select(
        "namespace",
        "pod",
        "ts",
        pl.when(pl.col("has_cpu")).then(pl.col("cpu_request")).alias("cpu_request"),
        pl.when(pl.col("has_memory")).then(pl.col("memory").round().cast(pl.Int64)).alias("memory_request_bytes"),
    )


def with_requests(
    allocations: pa.Table,
    requests: Iterable[Series],
    when: Callable[[float], dt.datetime] | None = None,
    agent_requests: Iterable[Series] = (),
) -> pa.Table:
    """``allocations`` with each pod's CPU and memory requests at the row's step (:func:`pod_requests`), from
    ``requests`` (kube-state-metrics), else from ``agent_requests`` (the node agent's ``gpuledger_pod_requests``) at
    a step where kube-state-metrics has no series of the pod; a pod with neither at that step keeps them null."""
    frame = pl.from_arrow(allocations)
    assert isinstance(frame, pl.DataFrame)
    known = pod_requests(requests, when or timestamp)
    if fallback := list(agent_requests):
        agent = pod_requests(fallback, when or timestamp)
        known = pl.concat([known, agent.join(known, on=["namespace", "pod", "ts"], how="anti")])
    if frame.height == 0 or known.height == 0:
        return allocations
    joined = frame.drop("cpu_request", "memory_request_bytes").join(
        known, on=["namespace", "pod", "ts"], how="left", maintain_order="left"
    )
    return joined.select(GPU_ALLOCATIONS.columns).to_arrow().cast(GPU_ALLOCATIONS.schema)


def kube_rows(rows: Rows, kube: KubeState, *, cluster: str, when: Callable[[float], dt.datetime] | None = None) -> Rows:
    """DCGM rows completed with kube-state-metrics (and, where its series are missing, the node agents' own):
    owner chains and workloads, proven allocations, the pods' CPU and memory requests, node rows."""
    when = when or timestamp
    nodes = node_rows(
        kube.node_labels, rows.samples, cluster=cluster, node_info=kube.node_info, agent_nodes=kube.agent_nodes
    )
    single = {row["node"] for row in nodes if row["mig_strategy"] == "single"}
    workloads = agent_pod_owners(kube.agent_owners) | pod_owners(
        kube.pod_owners, kube.replicaset_owners, kube.job_owners
    )
    allocations = attribute(
        rows, kube.gpu_requests, workloads, cluster=cluster, when=when, single_strategy_nodes=single
    )
    allocations = with_requests(allocations, kube.resource_requests, when, kube.agent_requests)
    return Rows(rows.samples, allocations, pa.Table.from_pylist(nodes, schema=NODES.schema))
