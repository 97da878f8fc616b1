"""What-if node packing: how many nodes each node pool needs per time bucket, before and after a change (pure).

Definition (README, Definitions, "Node-hour savings (what-if packing)"; pinned by ``tests/test_recommend_packing.py``):

**Pools.** A node pool is (cluster, node group, instance type, capacity type) with its GPUs per node (by
``analysis.gpu_count.node_gpu_count``'s rule; the caller applies it), its price per node-hour, and optionally its
vCPUs and memory per node (null: that resource is not checked).

**Requests.** A pod's GPU request is a share of one GPU or whole GPUs (``gpu_share``): whole GPUs as they are, a
MIG profile as its compute slices / the GPU's (``3g.40gb`` on a 7-slice GPU = 3/7), a time-sliced replica 1/k. A
share below 1 must fit on one GPU; n whole GPUs need n GPUs nobody else uses. CPU and memory requests (null = 0)
count against the node's.

**Packing.** Per pool and bucket, the bucket's pods are placed first-fit decreasing, by GPU request, then CPU, then
memory (then namespace and pod, so the result is deterministic): each pod goes onto the first node that has room for
all of its requests, or opens a new node. A node is needed when some pod is on it. This is the question Karpenter's
consolidation ("node deletion": can every pod of the node run on other nodes' free capacity? then the node's price is
saved; karpenter.sh docs, concepts/disruption, and its consolidation design) and cluster-autoscaler's scale-down ("can
all pods on the node be moved to other nodes?", cluster-autoscaler FAQ "How does scale-down work?") answer node by
node, asked of the whole pool at once.

**Savings** = node-hours removed x the pool's price per node-hour, where node-hours = nodes needed x the bucket's
hours, comparing the packing of the pods after the change with the **same packing of today's pods** (never today's
possibly loose fleet). A change that frees GPUs but no node saves $0 and says what else would have to move: the GPUs
(and vCPUs) of other pods on the least-used node needed after the change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final

import polars as pl
from polars.datatypes import DataTypeClass

from analysis.errors import AnalysisError

POOL_KEY: Final = ("cluster", "node_group", "instance_type", "capacity_type")
POOL_COLUMNS: Final = (*POOL_KEY, "gpus_per_node", "usd_per_node_hour")
"""Required columns of the pools frame; ``vcpus_per_node`` and ``memory_gib_per_node`` are optional."""
POD_COLUMNS: Final = (*POOL_KEY, "bucket", "namespace", "pod", "gpu")
"""Required columns of a pods frame; ``cpu`` (vCPUs) and ``memory_gib`` are optional."""
RULE: Final = (
    "pods packed first-fit decreasing (GPU, then CPU, then memory requests) onto nodes of their pool, per bucket; "
    "savings = node-hours removed x node price, against the same packing of today's pods"
)
_Dtypes = dict[str, pl.DataType | DataTypeClass]
_DENOMINATOR: Final = 1000
"""A share is read as the nearest fraction with a denominator up to this (3/7, 1/3), then as ``UNITS``."""
UNITS: Final = 27720
"""A GPU in whole units: lcm(1..12), so MIG slices of a 7- or 4-slice GPU and 1/k time-slicing for k up to 12 are
exact (3/7 + 4/7 fills a GPU) and packing compares integers."""


class PackingInputError(AnalysisError):
    """A frame handed to the what-if packing is missing something or holds a request no node can take."""


class MissingPackingColumns(PackingInputError):
    def __init__(self, frame: str, missing: Sequence[str]) -> None:
        super().__init__(
            f"the {frame} frame lacks column(s) {', '.join(missing)}: add them to pack its pods onto nodes"
        )


class InvalidGpuRequest(PackingInputError):
    def __init__(self, pod: str, gpu: float) -> None:
        super().__init__(
            f"pod {pod} requests {gpu:g} GPUs: a GPU request is a share below 1 (a MIG profile, a time-sliced "
            "replica) or whole GPUs; fix the request"
        )


class UnknownNodePool(PackingInputError):
    def __init__(self, pod: str, pool: tuple[Any, ...]) -> None:
        super().__init__(
            f"pod {pod} runs in node pool {'/'.join(str(part) for part in pool)}, which the pools frame does not "
            "list: add the pool with its GPUs per node and price"
        )


class PodDoesNotFit(PackingInputError):
    def __init__(self, pod: str, pool: tuple[Any, ...], detail: str) -> None:
        super().__init__(
            f"pod {pod} fits on no node of pool {'/'.join(str(part) for part in pool)}: {detail}; fix the request "
            "or move it to a larger instance type"
        )


def gpu_share(
    gpus: int = 1, *, mig_slices: int | None = None, gpu_slices: int = 7, replicas: int | None = None
) -> float:
    """A pod's GPU request as a packing share: ``gpus`` whole GPUs, or a MIG profile's ``mig_slices`` of the GPU's
    ``gpu_slices`` compute slices (7; 4 on an A30), or one of ``replicas`` time-sliced replicas of one GPU."""
    if mig_slices is not None:
        return mig_slices / gpu_slices
    if replicas is not None:
        return 1 / replicas
    return float(gpus)


@dataclass(frozen=True)
class PoolSpec:
    """One node pool as the packing sees it (``POOL_KEY``, GPUs, price and, when known, vCPUs and GiB per node)."""

    key: tuple[Any, ...]
    gpus: int
    usd_per_hour: float
    vcpus: float | None
    memory_gib: float | None


@dataclass(frozen=True)
class _Pod:
    name: str
    gpu: int
    """``UNITS`` of a GPU."""
    cpu: float
    memory_gib: float


@dataclass
class _Node:
    gpu_free: list[int]
    cpu_used: float = 0.0
    memory_used: float = 0.0
    pods: list[str] = field(default_factory=list)

    def place(self, pod: _Pod, pool: PoolSpec) -> bool:
        if pool.vcpus is not None and self.cpu_used + pod.cpu > pool.vcpus + 1e-9:
            return False
        if pool.memory_gib is not None and self.memory_used + pod.memory_gib > pool.memory_gib + 1e-9:
            return False
        if pod.gpu >= UNITS:
            empty = [i for i, free in enumerate(self.gpu_free) if free == UNITS]
            whole = pod.gpu // UNITS
            if len(empty) < whole:
                return False
            for i in empty[:whole]:
                self.gpu_free[i] = 0
        else:
            slot = next((i for i, free in enumerate(self.gpu_free) if free >= pod.gpu), None)
            if slot is None:
                return False
            self.gpu_free[slot] -= pod.gpu
        self.cpu_used += pod.cpu
        self.memory_used += pod.memory_gib
        self.pods.append(pod.name)
        return True

    @property
    def gpus_used(self) -> int:
        return sum(1 for free in self.gpu_free if free < UNITS)


@dataclass(frozen=True)
class Packing:
    """One packing: ``nodes`` per pool and bucket (nodes, GPUs in use, least GPUs and vCPUs in use on one node),
    ``placements`` per pod (the node index it went onto within its pool and bucket)."""

    nodes: pl.DataFrame
    placements: pl.DataFrame


@dataclass(frozen=True)
class WhatIf:
    """Nodes needed before and after a change, per pool and bucket, and what the removed node-hours save."""

    nodes: pl.DataFrame
    """Per pool and bucket: nodes_before, nodes_after, gpus_in_use_before/after, node_hours_removed,
    usd_per_node_hour, savings_usd, and ``to_free_a_node`` where GPUs were freed but no node."""
    node_hours_removed: float
    savings_usd: float
    notes: tuple[str, ...]
    """Per pool where the change frees GPUs but no node in some bucket: what else would have to move (first such
    bucket)."""
    rule: str = RULE


def _require(frame: pl.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise MissingPackingColumns(name, missing)


def _pools(frame: pl.DataFrame) -> dict[tuple[Any, ...], PoolSpec]:
    _require(frame, POOL_COLUMNS, "pools")
    pools = {}
    for row in frame.iter_rows(named=True):
        key = tuple(row[column] for column in POOL_KEY)
        pools[key] = PoolSpec(
            key, int(row["gpus_per_node"]), float(row["usd_per_node_hour"]),
            row.get("vcpus_per_node"), row.get("memory_gib_per_node"),
        )  # fmt: skip
    return pools


Request = tuple[int, float, float]
"""A pod's (GPU share in ``UNITS``, vCPUs, GiB of memory) as the packing compares them."""


def too_large_for(wanted: Request, pool: PoolSpec) -> str | None:
    """Why a request fits on no empty node of ``pool`` (which resource, how much of it a node has), or None."""
    gpu, cpu, memory_gib = wanted
    if gpu > pool.gpus * UNITS:
        return f"{gpu / UNITS:g} GPUs requested, {pool.gpus} per node"
    if pool.vcpus is not None and cpu > pool.vcpus:
        return f"{cpu:g} vCPUs requested, {pool.vcpus:g} per node"
    if pool.memory_gib is not None and memory_gib > pool.memory_gib:
        return f"{memory_gib:g} GiB requested, {pool.memory_gib:g} GiB per node"
    return None


@dataclass(frozen=True)
class Bucket:
    """One bucket of one pool packed: nodes needed, GPUs in use, the least GPUs and vCPUs in use on one node, and
    each pod's node (in the order of ``requests_of``'s sort)."""

    nodes: int
    gpus_in_use: int
    least_gpus_on_a_node: int
    least_vcpus_on_a_node: float
    node_of: tuple[int, ...]


def request(gpu: float, cpu: float | None = None, memory_gib: float | None = None, name: str = "a pod") -> Request:
    """A pod's request as the packing reads it (``InvalidGpuRequest`` for a share above 1 that is not whole)."""
    if gpu <= 0 or not math.isfinite(gpu):
        raise InvalidGpuRequest(name, gpu)
    share = Fraction(gpu).limit_denominator(_DENOMINATOR)
    if share > 1 and share.denominator != 1:
        raise InvalidGpuRequest(name, gpu)
    return units(share), float(cpu or 0.0), float(memory_gib or 0.0)


def units(share: float | Fraction) -> int:
    """A GPU share (1 = a whole GPU) in ``UNITS``: the nearest fraction with a small denominator, rounded."""
    exact = share if isinstance(share, Fraction) else Fraction(share).limit_denominator(_DENOMINATOR)
    return max(1, round(exact * UNITS))


def requests_of(requests: Iterable[Request]) -> tuple[Request, ...]:
    """Requests in first-fit-decreasing order: GPU, then CPU, then memory, largest first."""
    return tuple(sorted(requests, reverse=True))


@lru_cache(maxsize=65536)
def pack_bucket(pool: PoolSpec, requests: tuple[Request, ...]) -> Bucket:
    """``requests`` (sorted by ``requests_of``) packed first-fit onto nodes of ``pool``. Cached: a pool's buckets
    mostly hold the same pods hour after hour, and the plan packs each pool once per change."""
    nodes: list[_Node] = []
    node_of = []
    for i, (gpu, cpu, memory) in enumerate(requests):
        pod = _Pod(f"#{i}", gpu, cpu, memory)
        reason = too_large_for((gpu, cpu, memory), pool)
        if reason is not None:
            raise PodDoesNotFit(f"request #{i} ({gpu / UNITS:g} GPUs)", pool.key, reason)
        index = next((j for j, node in enumerate(nodes) if node.place(pod, pool)), None)
        if index is None:
            nodes.append(_Node([UNITS] * pool.gpus))
            index = len(nodes) - 1
            if not nodes[index].place(pod, pool):
                raise PodDoesNotFit(pod.name, pool.key, "its GPU, CPU and memory requests together exceed a node's")
        node_of.append(index)
    if not nodes:
        return Bucket(0, 0, 0, 0.0, ())
    least = min(nodes, key=lambda node: (node.gpus_used, node.cpu_used))
    return Bucket(len(nodes), sum(node.gpus_used for node in nodes), least.gpus_used, least.cpu_used, tuple(node_of))


def pack(pools: pl.DataFrame | pl.LazyFrame, pods: pl.DataFrame | pl.LazyFrame) -> Packing:
    """Pack ``pods`` (one row per pod per bucket) onto nodes of their pools, first-fit decreasing (module doc)."""
    pool_frame = pools.collect() if isinstance(pools, pl.LazyFrame) else pools
    pod_frame = pods.collect() if isinstance(pods, pl.LazyFrame) else pods
    catalog = _pools(pool_frame)
    _require(pod_frame, POD_COLUMNS, "pods")
    for column in ("cpu", "memory_gib"):
        if column not in pod_frame.columns:
            pod_frame = pod_frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    ordered = pod_frame.sort(
        [*POOL_KEY, "bucket", "gpu", "cpu", "memory_gib", "namespace", "pod"],
        descending=[*(False for _ in POOL_KEY), False, True, True, True, False, False],
        nulls_last=True,
    )
    node_rows: list[dict[str, Any]] = []
    placement_rows: list[dict[str, Any]] = []
    for key_bucket, group in ordered.group_by([*POOL_KEY, "bucket"], maintain_order=True):
        key = tuple(key_bucket[: len(POOL_KEY)])
        bucket = key_bucket[len(POOL_KEY)]
        pool = catalog.get(key)
        named = []
        for row in group.iter_rows(named=True):
            name = f"{row['namespace']}/{row['pod']}"
            wanted = request(float(row["gpu"]), row.get("cpu"), row.get("memory_gib"), name)
            if pool is None:
                raise UnknownNodePool(name, key)
            reason = too_large_for(wanted, pool)
            if reason is not None:
                raise PodDoesNotFit(name, key, reason)
            named.append((wanted, name))
        named.sort(key=lambda item: (tuple(-x for x in item[0]), item[1]))
        assert pool is not None
        try:
            packed = pack_bucket(pool, tuple(wanted for wanted, _ in named))
        except PodDoesNotFit as error:
            raise PodDoesNotFit(
                named[0][1], key, "its GPU, CPU and memory requests together exceed a node's"
            ) from error
        for (_, name), index in zip(named, packed.node_of, strict=True):
            placement_rows.append(dict(zip(POOL_KEY, key, strict=True), bucket=bucket, pod=name, node=index))
        node_rows.append(
            dict(zip(POOL_KEY, key, strict=True), bucket=bucket, nodes=packed.nodes, gpus_in_use=packed.gpus_in_use,
                 least_gpus_on_a_node=packed.least_gpus_on_a_node,
                 least_vcpus_on_a_node=packed.least_vcpus_on_a_node)
        )  # fmt: skip
    bucket_dtype = pod_frame.schema["bucket"]
    node_schema: _Dtypes = {
        **{column: pod_frame.schema[column] for column in POOL_KEY}, "bucket": bucket_dtype, "nodes": pl.Int64,
        "gpus_in_use": pl.Int64, "least_gpus_on_a_node": pl.Int64, "least_vcpus_on_a_node": pl.Float64,
    }  # fmt: skip
    placement_schema: _Dtypes = {
        **{column: pod_frame.schema[column] for column in POOL_KEY}, "bucket": bucket_dtype, "pod": pl.String,
        "node": pl.Int64,
    }  # fmt: skip
    return Packing(pl.DataFrame(node_rows, schema=node_schema), pl.DataFrame(placement_rows, schema=placement_schema))


def _to_free_a_node(row: dict[str, Any], gpus_per_node: int, with_cpu: bool) -> str | None:
    freed = row["gpus_in_use_before"] - row["gpus_in_use_after"]
    if row["nodes_after"] < row["nodes_before"] or freed <= 0 or row["nodes_after"] == 0:
        return None
    vcpus = row["least_vcpus_on_a_node"] if with_cpu else None
    return to_free_a_node(freed, row["nodes_after"], gpus_per_node, row["least_gpus_on_a_node"], vcpus)


def to_free_a_node(freed: int, nodes: int, gpus_per_node: int, least_gpus: int, least_vcpus: float | None) -> str:
    """What a change that frees GPUs but no node says: how many it frees, and what else would have to move (the
    other pods of the least-used node; its vCPUs when CPU is checked)."""
    move = f"{least_gpus} more GPUs" + (f" ({least_vcpus:g} vCPUs)" if least_vcpus is not None else "")
    return (
        f"frees {freed} of {nodes * gpus_per_node} GPUs on {nodes} node{'s' if nodes != 1 else ''}; {move} of other "
        "pods would have to move to free a node"
    )


def what_if(
    pools: pl.DataFrame | pl.LazyFrame,
    before: pl.DataFrame | pl.LazyFrame,
    after: pl.DataFrame | pl.LazyFrame,
    bucket_hours: float = 1.0,
) -> WhatIf:
    """Nodes needed for today's pods (``before``) and for the pods after a change (``after``), both packed the same
    way, and the savings of the node-hours removed; every bucket lasts ``bucket_hours``."""
    pool_frame = pools.collect() if isinstance(pools, pl.LazyFrame) else pools
    catalog = _pools(pool_frame)
    keys = [*POOL_KEY, "bucket"]
    old = pack(pool_frame, before).nodes
    new = pack(pool_frame, after).nodes
    joined = (
        old.select(*keys, pl.col("nodes").alias("nodes_before"), pl.col("gpus_in_use").alias("gpus_in_use_before"))
        .join(new.rename({"nodes": "nodes_after", "gpus_in_use": "gpus_in_use_after"}), on=keys, how="full",
              coalesce=True)
        .with_columns(pl.col("nodes_before", "nodes_after", "gpus_in_use_before", "gpus_in_use_after").fill_null(0))
        .sort(keys)
    )  # fmt: skip
    rows = []
    notes: dict[tuple[Any, ...], str] = {}
    for row in joined.iter_rows(named=True):
        key = tuple(row[column] for column in POOL_KEY)
        pool = catalog[key]
        removed = (row["nodes_before"] - row["nodes_after"]) * bucket_hours
        note = _to_free_a_node(row, pool.gpus, pool.vcpus is not None)
        if note is not None:
            notes.setdefault(key, f"{'/'.join(str(part) for part in key)}: {note}")
        rows.append(
            {**{column: row[column] for column in (*keys, "nodes_before", "nodes_after", "gpus_in_use_before",
                                                   "gpus_in_use_after")},
             "node_hours_removed": removed, "usd_per_node_hour": pool.usd_per_hour,
             "savings_usd": removed * pool.usd_per_hour, "to_free_a_node": note}
        )  # fmt: skip
    schema: _Dtypes = {
        **{column: joined.schema[column] for column in keys}, "nodes_before": pl.Int64, "nodes_after": pl.Int64,
        "gpus_in_use_before": pl.Int64, "gpus_in_use_after": pl.Int64, "node_hours_removed": pl.Float64,
        "usd_per_node_hour": pl.Float64, "savings_usd": pl.Float64, "to_free_a_node": pl.String,
    }  # fmt: skip
    frame = pl.DataFrame(rows, schema=schema)
    return WhatIf(
        frame,
        float(frame["node_hours_removed"].sum()),
        float(frame["savings_usd"].sum()),
        tuple(notes.values()),
    )
