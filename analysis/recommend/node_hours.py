"""The plan priced by the nodes that go away (pure).

Definition (README, Definitions, "Plan savings (node-hours)"; pinned by ``tests/test_recommend_node_hours.py``):

Clouds bill per node, so a change saves what the nodes it removes cost. Per cluster, today's pods (one per hour they
held GPUs: whole GPUs, a MIG instance's slices / the GPU's, a time-sliced replica's 1 / the most holders of a minute,
and their CPU and memory requests) are packed onto the nodes of their node pool hour by hour, first-fit decreasing
(``analysis.recommend.packing``). Then the plan's changes are applied one after another in plan order, each to the
pods the previous ones left, and the pods are packed again the same way:

- ``gpu-count``: the workload's pods request the GPUs they used;
- ``mig``: its one-GPU pods request their MIG profile (slices / the GPU's) on the same nodes (a MIG change on a
  spot pool, ``plan.MIG_COMBINE_RULE``: on the spot NodePool it exports, its instance type at the spot price, with
  each workload's expected interruption loss x its slices / the GPU's);
- ``time-slicing``: its one-GPU pods request 1/k of a GPU on the time-sliced node pool;
- ``gpu-model``: its pods move to the target instance type's node pool;
- ``spot``: its pods move to the spot node pool of the same instance type (and a time-sliced pool on spot takes the
  pods of both changes at 1/k);
- ``idle-reclaim``: its pods are gone in every hour that lies wholly past the first ``idle_reclaim_hours`` of an idle
  run (the workload scaled to zero);
- ``autoscaling``: no pod moves; the node group runs max(min nodes, the packed nodes) instead of the nodes seen, so it
  banks today's loose capacity: node-hours seen - that.

A change's saving = node-hours removed x each pool's price per node-hour (a pool the change fills counts negative),
x 730 / window hours, minus the expected spot interruption loss of the pods it puts on spot. It is measured against
the packing before it (today's pods, packed, for the first), never against today's possibly loose fleet, so the
changes add up: the plan's total is node-hours seen - node-hours after the plan, x price. A change that frees GPUs
but no node saves $0 and says what else would have to move. Pods on nodes with no known instance type or price are
not packed (the count is in ``notes``); pods with no CPU or memory request known are packed by their GPUs alone. A
pod seen on two nodes in one hour (a StatefulSet pod moved to another node keeps its name) requests the most it held
on one node; a request no node of its pool could take is not packed and named in ``notes``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Final

import polars as pl

from analysis import mig
from analysis.errors import AnalysisError
from analysis.instance_resources import resources_of
from analysis.instances import instance_types
from analysis.pricing import ON_DEMAND, SPOT, PriceCatalog
from analysis.recommend.model import Recommendation, nodepool_of, workloads_of
from analysis.recommend.packing import (
    POOL_KEY,
    UNITS,
    Bucket,
    PodDoesNotFit,
    PoolSpec,
    Request,
    gpu_share,
    pack_bucket,
    requests_of,
    to_free_a_node,
    too_large_for,
    units,
)
from analysis.recommend.packing import (
    RULE as PACKING_RULE,
)
from analysis.units import GIB, HOURS_PER_MONTH
from analysis.window import Window

BUCKET_HOURS: Final = 1.0
_NAMED: Final = 5
"""Pods a note names before it counts the rest."""
RULE: Final = (
    "per cluster, today's pods packed hour by hour onto their node pools, then the plan's changes applied in plan "
    "order and packed again; a change's saving = node-hours removed x price per node-hour x 730 / window hours "
    "(minus expected spot interruption loss); autoscaling banks node-hours seen - max(min nodes, packed nodes)"
)
PoolKey = tuple[str, str, str, str]
"""(cluster, node group, instance type, capacity type): ``packing.POOL_KEY``."""
Workload = tuple[str, str]


@dataclass(frozen=True)
class Pool:
    """A node pool: its packing spec, GPU model and region (to price a pool derived from it), and price source."""

    spec: PoolSpec
    gpu_model: str | None
    region: str | None
    price_source: str

    @property
    def key(self) -> PoolKey:
        return self.spec.key

    def to_dict(self) -> dict[str, Any]:
        cluster, group, itype, capacity = self.key
        return {
            "cluster": cluster,
            "node_group": group,
            "instance_type": itype,
            "capacity_type": capacity,
            "gpus_per_node": self.spec.gpus,
            "usd_per_node_hour": round(self.spec.usd_per_hour, 6),
            "vcpus_per_node": self.spec.vcpus,
            "memory_gib_per_node": self.spec.memory_gib,
            "price_source": self.price_source,
        }


@dataclass(frozen=True)
class PodRun:
    """One pod with one request in one pool, and the hours (indices from the window's start) it held GPUs."""

    pool: PoolKey
    namespace: str
    workload: str
    pod: str
    request: Request
    hours: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        gpu, cpu, memory = self.request
        return {
            "cluster": self.pool[0],
            "node_group": self.pool[1],
            "instance_type": self.pool[2],
            "capacity_type": self.pool[3],
            "namespace": self.namespace,
            "workload": self.workload,
            "pod": self.pod,
            "gpu": round(gpu / UNITS, 9),
            "cpu": cpu,
            "memory_gib": round(memory, 6),
            "hours": _runs(self.hours),
        }


@dataclass(frozen=True)
class NodeFleet:
    """Everything the plan's node-hour savings are computed from (built by ``node_fleet``)."""

    window: Window
    pools: Mapping[PoolKey, Pool]
    pods: tuple[PodRun, ...]
    seen: Mapping[PoolKey, Mapping[int, int]]
    """Nodes seen per pool and hour (today's fleet, as billed)."""
    reclaim: Mapping[tuple[str, str, str], frozenset[int]]
    """(cluster, namespace, workload) -> the hours an idle reclaim would remove."""
    catalog: PriceCatalog
    notes: tuple[str, ...] = ()
    min_percentile: float = 0.1
    """``autoscaling_min_percentile``: an autoscaled group's floor after the plan's other changes."""

    @property
    def hours(self) -> int:
        return max(1, round(self.window.hours / BUCKET_HOURS))

    @property
    def month(self) -> float:
        return HOURS_PER_MONTH / self.window.hours


@dataclass(frozen=True)
class PoolChange:
    """One pool's node-hours in the window before and after a change (or the plan)."""

    pool: PoolKey
    node_hours_before: float
    node_hours_after: float
    usd_per_node_hour: float

    @property
    def node_hours_removed(self) -> float:
        return self.node_hours_before - self.node_hours_after

    def to_dict(self, month: float) -> dict[str, Any]:
        return {
            "pool": "/".join(self.pool),
            "node_hours_before": round(self.node_hours_before, 4),
            "node_hours_after": round(self.node_hours_after, 4),
            "node_hours_removed_month": round(self.node_hours_removed * month, 4),
            "usd_per_node_hour": round(self.usd_per_node_hour, 6),
            "savings_usd_month": round(self.node_hours_removed * self.usd_per_node_hour * month, 2),
        }


@dataclass(frozen=True)
class Banked:
    """What one applied change saves on the bill: its pools' node-hours, the spot loss it adds, and a note."""

    pools: tuple[PoolChange, ...]
    month: float
    spot_loss_usd_month: float = 0.0
    note: str = ""
    adds_cost: bool = False
    """The change would add node-hours' cost (a new pool's nodes beside old ones that stay): not applied."""

    @property
    def node_hours_removed_month(self) -> float:
        return sum(p.node_hours_removed for p in self.pools) * self.month

    @property
    def savings_usd_month(self) -> float:
        node = sum(p.node_hours_removed * p.usd_per_node_hour for p in self.pools) * self.month
        return node - self.spot_loss_usd_month

    def to_dict(self) -> dict[str, Any]:
        return {
            "savings_usd_month": round(self.savings_usd_month, 2),
            "node_hours_removed_month": round(self.node_hours_removed_month, 4),
            "spot_loss_usd_month": round(self.spot_loss_usd_month, 2),
            "pools": [p.to_dict(self.month) for p in self.pools],
            **({"note": self.note} if self.note else {}),
        }


@dataclass(frozen=True)
class ClusterNodes:
    """A cluster's nodes before and after its plan: per pool, node-hours seen, packed today and after the plan;
    the packing's inputs (``pools``, ``pods_today``, ``pods_after``) so anyone can pack them again."""

    pools: tuple[Pool, ...]
    seen: Mapping[PoolKey, float]
    packed_today: Mapping[PoolKey, float]
    after: Mapping[PoolKey, float]
    removed: Mapping[PoolKey, float]
    """Node-hours the applied changes removed, per pool (negative where a change filled it)."""
    floors: Mapping[PoolKey, int]
    """Autoscaled pools: the fewest nodes they run after the plan (they bank from the nodes seen)."""
    pods_today: tuple[PodRun, ...]
    pods_after: tuple[PodRun, ...]
    window_hours: float
    notes: tuple[str, ...] = ()

    @property
    def month(self) -> float:
        return HOURS_PER_MONTH / self.window_hours

    def to_dict(self) -> dict[str, Any]:
        prices = {p.key: p.spec.usd_per_hour for p in self.pools}
        rows = []
        for pool in self.pools:
            k = pool.key
            seen, packed, after = self.seen.get(k, 0.0), self.packed_today.get(k, 0.0), self.after.get(k, 0.0)
            removed = self.removed.get(k, 0.0)
            rows.append(
                {
                    "node_hours_removed": round(removed, 4),
                    "node_hours_removed_month": round(removed * self.month, 4),
                    "savings_usd_month": round(removed * prices[k] * self.month, 2),
                    "pool": "/".join(k),
                    "nodes_seen_mean": round(seen / self.window_hours, 3),
                    "nodes_packed_today_mean": round(packed / self.window_hours, 3),
                    "nodes_after_plan_mean": round(after / self.window_hours, 3),
                    "node_hours_seen": round(seen, 4),
                    "node_hours_packed_today": round(packed, 4),
                    "node_hours_after_plan": round(after, 4),
                    "autoscaled_min_nodes": self.floors.get(k),
                    "usd_per_node_hour": round(prices[k], 6),
                }
            )
        return {
            "rule": RULE,
            "packing_rule": PACKING_RULE,
            "bucket_hours": BUCKET_HOURS,
            "window_hours": self.window_hours,
            "month_factor": round(self.month, 9),
            "pools": [p.to_dict() for p in self.pools],
            "nodes": rows,
            "pods_today": [p.to_dict() for p in self.pods_today],
            "pods_after_plan": [p.to_dict() for p in self.pods_after],
            "notes": list(self.notes),
        }


def _runs(hours: Sequence[int]) -> list[list[int]]:
    """Sorted hour indices as [first, end) runs."""
    out: list[list[int]] = []
    for h in hours:
        if out and out[-1][1] == h:
            out[-1][1] = h + 1
        else:
            out.append([h, h + 1])
    return out


# Building the fleet from the recommendation inputs.


def node_fleet(
    window: Window,
    held: pl.DataFrame,
    present: pl.DataFrame,
    facts: pl.DataFrame,
    prices: pl.DataFrame,
    streaks: pl.DataFrame,
    catalog: PriceCatalog,
    idle_reclaim_hours: float,
    min_percentile: float = 0.1,
) -> NodeFleet:
    """The fleet to pack: ``held`` and ``present`` from ``analysis.recommend.usage.pod_hours``, ``facts`` from
    ``context.node_facts`` (pool of each node), ``prices`` from ``context.node_prices``, ``streaks`` from
    ``usage.idle_streaks``."""
    notes: list[str] = []
    pools = _pools(facts, prices, catalog)
    pool_expr = [pl.col(k) for k in POOL_KEY]
    keys = list(POOL_KEY)
    start = window.start
    hour = (pl.col("bucket") - pl.lit(start)).dt.total_seconds() // 3600
    node_pool = facts.select("cluster", "node", *keys[1:])
    seen_rows = (
        present.join(node_pool, on=["cluster", "node"], how="inner")
        .filter(pl.all_horizontal(c.is_not_null() for c in pool_expr))
        .group_by(*keys, "bucket")
        .agg(pl.col("node").n_unique().alias("nodes"))
        .with_columns(hour.cast(pl.Int64).alias("hour"))
    )
    seen: dict[PoolKey, dict[int, int]] = {}
    for row in seen_rows.iter_rows(named=True):
        seen_key = _pool_key(row)
        if seen_key in pools:
            seen.setdefault(seen_key, {})[row["hour"]] = row["nodes"]
    shares = _shares(held)
    pod_keys = ["cluster", "namespace", "pod"]
    requests = held.group_by(pod_keys).agg(
        pl.col("cpu_request").max().alias("cpu"), (pl.col("memory_request_bytes").max() / GIB).alias("memory_gib")
    )
    per_hour = (
        shares.join(node_pool, on=["cluster", "node"], how="left")
        .group_by(*keys, "namespace", "workload", "pod", "bucket", "node")
        .agg(pl.col("share").sum().alias("gpu"))
        .group_by(*keys, "namespace", "workload", "pod", "bucket")
        .agg(pl.col("gpu").max())
        .with_columns(
            pl.when((pl.col("gpu") > 1) & (pl.col("gpu") != pl.col("gpu").round()))
            .then(pl.col("gpu").ceil())
            .otherwise(pl.col("gpu"))
            .alias("gpu"),
            hour.cast(pl.Int64).alias("hour"),
        )
        .join(requests, on=pod_keys, how="left")
    )
    unknown = per_hour.filter(~pl.all_horizontal(c.is_not_null() for c in pool_expr))
    if unknown.height:
        notes.append(
            f"{unknown.height} pod-hours on nodes with no known node group, instance type or capacity type are not "
            "packed (no node price to bank)"
        )
    runs_frame = (
        per_hour.filter(pl.all_horizontal(c.is_not_null() for c in pool_expr))
        .group_by(*keys, "namespace", "workload", "pod", "gpu", "cpu", "memory_gib")
        .agg(pl.col("hour").unique().sort())
        .sort(*keys, "namespace", "workload", "pod", "gpu", nulls_last=True)
    )
    pods = []
    no_requests = 0
    too_large: list[str] = []
    for row in runs_frame.iter_rows(named=True):
        key = _pool_key(row)
        if key not in pools:
            continue
        wanted: Request = (units(float(row["gpu"])), float(row["cpu"] or 0.0), float(row["memory_gib"] or 0.0))
        name = f"{row['namespace']}/{row['pod']}"
        reason = too_large_for(wanted, pools[key].spec)
        if reason is not None:
            too_large.append(f"{name} in {'/'.join(key)} ({reason}, {len(row['hour'])} h)")
            continue
        if row["cpu"] is None and row["memory_gib"] is None:
            no_requests += 1
        pods.append(
            PodRun(key, row["namespace"], row["workload"], row["pod"], wanted, tuple(int(h) for h in row["hour"]))
        )
    if too_large:
        shown = "; ".join(too_large[:_NAMED])
        more = f" and {len(too_large) - _NAMED} more" if len(too_large) > _NAMED else ""
        notes.append(
            f"{len(too_large)} pod request(s) fit on no node of their pool and are not packed: {shown}{more}; check "
            "the pods' GPU requests and the nodes' instance types"
        )
    if no_requests:
        notes.append(
            f"{no_requests} of {len(pods)} pods have no CPU or memory request stored: packed by their GPUs alone"
        )
    reclaim = _reclaim(window, streaks, idle_reclaim_hours)
    return NodeFleet(window, pools, tuple(pods), seen, reclaim, catalog, tuple(notes), min_percentile)


def _pool_key(row: Mapping[str, Any]) -> PoolKey:
    cluster, group, itype, capacity = (row[k] for k in POOL_KEY)
    return cluster, group, itype, capacity


def _shares(held: pl.DataFrame) -> pl.DataFrame:
    """``held`` with each MIG instance's share = its profile's compute slices / the GPU's (``packing.gpu_share``)."""
    migs = held.filter(pl.col("mig_profile").is_not_null()).select("gpu_model", "mig_profile").unique()
    catalog = mig.load_catalog()
    fractions = []
    for model, profile in migs.iter_rows():
        try:
            gpu = catalog.gpu(model)
            fraction = gpu_share(mig_slices=gpu.profile(profile).slices, gpu_slices=gpu.compute_slices)
        except AnalysisError:
            fraction = 1.0
        fractions.append({"gpu_model": model, "mig_profile": profile, "mig_share": fraction})
    table = pl.DataFrame(fractions, schema={"gpu_model": pl.String, "mig_profile": pl.String, "mig_share": pl.Float64})
    return held.join(table, on=["gpu_model", "mig_profile"], how="left", nulls_equal=False).with_columns(
        pl.coalesce(pl.col("mig_share"), pl.col("share")).alias("share")
    )


def _pools(facts: pl.DataFrame, prices: pl.DataFrame, catalog: PriceCatalog) -> dict[PoolKey, Pool]:
    """Today's pools from the nodes' facts: GPUs per node = the most of its nodes' (``analysis.gpu_count``), price
    per node-hour = the mean of its nodes' (GPU-hour price paid x GPUs per node), else the catalog's."""
    keys = list(POOL_KEY)
    gpu_models = _gpu_models()
    rows = (
        facts.join(prices, on=["cluster", "node"], how="left")
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
        .group_by(keys)
        .agg(
            pl.col("gpu_count").max().alias("gpus"),
            (pl.col("usd_per_gpu_hour") * pl.col("gpu_count")).mean().alias("usd"),
            pl.col("price_source").drop_nulls().unique().sort().str.join("; ").alias("source"),
            pl.col("region").drop_nulls().first().alias("region"),
        )
        .sort(keys)
    )
    pools: dict[PoolKey, Pool] = {}
    for row in rows.iter_rows(named=True):
        key = _pool_key(row)
        gpus = int(row["gpus"] or 0)
        if gpus <= 0:
            continue
        model = gpu_models.get(row["instance_type"])
        usd, source = row["usd"], row["source"]
        if usd is None:
            price = catalog.gpu_hour_price(row["instance_type"], row["capacity_type"], model, row["region"],
                                           gpu_count=gpus)  # fmt: skip
            usd, source = price.usd_per_gpu_hour * gpus, price.source
        pools[key] = _pool(key, gpus, float(usd), model, row["region"], source or "")
    return pools


def _gpu_models() -> dict[str, str]:
    return {name: itype.gpu_model for name, itype in instance_types().items()}


def _pool(key: PoolKey, gpus: int, usd: float, model: str | None, region: str | None, source: str) -> Pool:
    resources = resources_of(key[2])
    spec = PoolSpec(key, gpus, usd, resources.vcpus if resources else None, resources.memory_gib if resources else None)
    return Pool(spec, model, region, source)


def _reclaim(window: Window, streaks: pl.DataFrame, idle_hours: float) -> dict[tuple[str, str, str], frozenset[int]]:
    """Per workload, the hours that lie wholly past the first ``idle_hours`` of one of its idle runs."""
    out: dict[tuple[str, str, str], set[int]] = {}
    if streaks.height == 0:
        return {}
    threshold = dt.timedelta(hours=idle_hours)
    for row in streaks.filter(pl.col("minutes") >= idle_hours * 60).iter_rows(named=True):
        begin = row["start"] + threshold
        first = -(-int((begin - window.start).total_seconds()) // 3600)
        last = int((row["end"] - window.start).total_seconds()) // 3600
        hours = set(range(max(first, 0), last))
        if hours:
            out.setdefault((row["cluster"], row["namespace"], row["workload"]), set()).update(hours)
    return {k: frozenset(v) for k, v in out.items()}


# Applying the plan's changes.


@dataclass
class _State:
    fleet: NodeFleet
    pools: dict[PoolKey, Pool]
    pods: list[PodRun]
    floors: dict[PoolKey, int] = field(default_factory=dict)
    """Pools an applied autoscaling change keeps at its min nodes: they run max(min nodes, packed) every hour."""
    cache: dict[PoolKey, tuple[float, dict[int, Bucket]]] = field(default_factory=dict)

    def packed(self, key: PoolKey) -> tuple[float, dict[int, Bucket]]:
        """Node-hours of pool ``key`` with the current pods (and floor), and each hour's packing."""
        if key not in self.cache:
            per_hour: dict[int, list[Request]] = {}
            for p in self.pods:
                if p.pool == key:
                    for h in p.hours:
                        per_hour.setdefault(h, []).append(p.request)
            spec = self.pools[key].spec
            buckets = {h: pack_bucket(spec, requests_of(r)) for h, r in per_hour.items()}
            floor = self.floors.get(key, 0)
            nodes = sum(b.nodes for b in buckets.values())
            if floor:
                nodes = sum(max(floor, buckets[h].nodes if h in buckets else 0) for h in range(self.fleet.hours))
            self.cache[key] = (nodes * BUCKET_HOURS, buckets)
        return self.cache[key]

    def replace_pods(self, pods: list[PodRun], changed: Iterable[PoolKey]) -> None:
        self.pods = pods
        for key in changed:
            self.cache.pop(key, None)

    def set_floor(self, key: PoolKey, floor: int) -> None:
        self.floors[key] = floor
        self.cache.pop(key, None)


def bank(fleet: NodeFleet, cluster: str | None, applied: Sequence[Recommendation]) -> tuple[list[Banked], ClusterNodes]:
    """Each of ``applied`` (in plan order) priced by the node-hours it removes, and the cluster's nodes before and
    after; ``cluster`` None packs every cluster's pods (a change whose target names no cluster)."""
    pods = [p for p in fleet.pods if cluster is None or p.pool[0] == cluster]
    pools = {k: v for k, v in fleet.pools.items() if cluster is None or k[0] == cluster}
    state = _State(fleet, dict(pools), list(pods))
    today = {k: state.packed(k)[0] for k in pools}
    today_hours = {k: state.packed(k)[1] for k in pools}
    found: dict[int, Banked] = {}
    for i, rec in enumerate(applied):
        if rec.kind != "autoscaling":
            found[i] = _placement(fleet, state, rec)
    for i, rec in enumerate(applied):
        if rec.kind == "autoscaling":
            found[i] = _autoscaling(fleet, state, rec, today, today_hours)
    out = [found[i] for i in range(len(applied))]
    removed: dict[PoolKey, float] = {}
    for banked in out:
        if not banked.adds_cost:
            for change in banked.pools:
                removed[change.pool] = removed.get(change.pool, 0.0) + change.node_hours_removed
    seen = {k: float(sum(fleet.seen.get(k, {}).values())) * BUCKET_HOURS for k in state.pools}
    after = {k: state.packed(k)[0] for k in state.pools}
    used = sorted(k for k in state.pools if seen.get(k) or after.get(k) or today.get(k))
    nodes = ClusterNodes(
        tuple(state.pools[k] for k in used), seen, today, after, removed, dict(state.floors), tuple(pods),
        tuple(state.pods), fleet.window.hours, fleet.notes,
    )  # fmt: skip
    return out, nodes


def _autoscaling(
    fleet: NodeFleet,
    state: _State,
    rec: Recommendation,
    today: Mapping[PoolKey, float],
    today_hours: Mapping[PoolKey, Mapping[int, Bucket]],
) -> Banked:
    """The node group's pools go from the nodes seen to max(floor, its pods packed) each hour, after the plan's
    placement changes: banked = node-hours seen - today's pods packed (the loose capacity) + the pods packed after
    the other changes - with the floor. The floor is the change's min nodes, less what the other changes took from
    the ``min_percentile`` of the group's packed nodes per hour (they moved its pods away)."""
    group = rec.target.get("node_group")
    floor = int(rec.evidence.get("min_nodes") or 0)
    changes = []
    notes = []
    for key in sorted(k for k in state.pools if k[1] == group and rec.target.get("cluster") in (None, k[0])):
        seen = float(sum(fleet.seen.get(key, {}).values())) * BUCKET_HOURS
        packed_now, buckets = state.packed(key)
        before = seen - today.get(key, 0.0) + packed_now
        dropped = max(0, _low(fleet, today_hours.get(key, {})) - _low(fleet, buckets))
        needed = max(0, floor - dropped)
        if needed < floor:
            notes.append(
                f"after the plan's other changes {'/'.join(key)} needs at least {needed} node(s), not {floor}: lower "
                "the min nodes of the exported settings once they are applied"
            )
        state.set_floor(key, needed)
        changes.append(PoolChange(key, before, state.packed(key)[0], state.pools[key].spec.usd_per_hour))
    note = "; ".join(notes) if changes else f"no pods of node group {group} to pack: nothing banked"
    return Banked(tuple(changes), fleet.month, note=note)


def _low(fleet: NodeFleet, buckets: Mapping[int, Bucket]) -> int:
    """The ``min_percentile`` of a pool's packed nodes per hour over the window (empty hours count 0)."""
    per_hour = sorted(buckets[h].nodes if h in buckets else 0 for h in range(fleet.hours))
    return per_hour[min(len(per_hour) - 1, max(0, math.ceil(fleet.min_percentile * len(per_hour)) - 1))]


def _placement(fleet: NodeFleet, state: _State, rec: Recommendation) -> Banked:
    moved, new_pools, loss, note = _moved(fleet, state, rec)
    if not moved:
        return Banked((), fleet.month, note=note or "none of its workloads' pods were seen on a priced node")
    for key, pool in new_pools.items():
        state.pools.setdefault(key, pool)
    before = {k: state.packed(k) for k in {p.pool for p in moved.values()} | {p.pool for p in moved}}
    pods = [moved.get(p, p) for p in state.pods]
    old_pods = state.pods
    state.replace_pods(pods, before)
    try:
        after = {k: state.packed(k) for k in before}
    except PodDoesNotFit as error:
        state.replace_pods(old_pods, before)
        return Banked((), fleet.month, note=f"not banked: {error}")
    changes = tuple(PoolChange(k, before[k][0], after[k][0], state.pools[k].spec.usd_per_hour) for k in sorted(before))
    banked = Banked(changes, fleet.month, loss, note)
    node_savings = banked.savings_usd_month + loss
    if node_savings < -0.005:
        state.replace_pods(old_pods, before)
        opened = ", ".join(f"{c.node_hours_after - c.node_hours_before:+g} node-hours in {'/'.join(c.pool)}"
                           for c in changes if c.node_hours_removed)  # fmt: skip
        return replace(
            banked, adds_cost=True,
            note=f"not applied: it would cost {-node_savings:,.2f} USD per month more ({opened}): the nodes it "
            "needs come beside nodes that stay",
        )  # fmt: skip
    if node_savings <= 0.005 and not note:
        banked = replace(banked, note=_to_free_a_node(before, after, state.pools))
    return banked


def _to_free_a_node(
    before: Mapping[PoolKey, tuple[float, dict[int, Bucket]]],
    after: Mapping[PoolKey, tuple[float, dict[int, Bucket]]],
    pools: Mapping[PoolKey, Pool],
) -> str:
    """What else would have to move when a change frees GPUs but no node (its first such hour)."""
    for key in sorted(before):
        old, new = before[key][1], after[key][1]
        for h in sorted(old):
            b, a = old[h], new.get(h)
            if a is None or a.nodes < b.nodes or a.gpus_in_use >= b.gpus_in_use or a.nodes == 0:
                continue
            freed = b.gpus_in_use - a.gpus_in_use
            what = to_free_a_node(freed, a.nodes, pools[key].spec.gpus, a.least_gpus_on_a_node, a.least_vcpus_on_a_node)
            return f"saves $0 on the bill: {'/'.join(key)}: {what}"
    return "saves $0 on the bill: no node-hour goes away"


def _moved(
    fleet: NodeFleet, state: _State, rec: Recommendation
) -> tuple[dict[PodRun, PodRun], dict[PoolKey, Pool], float, str]:
    """The pods ``rec`` changes (old -> new), the pools it adds, its expected spot loss per month, a note."""
    cluster = rec.target.get("cluster")
    mine = set(workloads_of(rec))
    pods = [p for p in state.pods if (p.namespace, p.workload) in mine and cluster in (None, p.pool[0])]
    ev = rec.evidence
    out: dict[PodRun, PodRun] = {}
    pools: dict[PoolKey, Pool] = {}
    loss = 0.0
    note = ""
    if rec.kind == "gpu-count":
        want, used = int(ev.get("gpus_requested") or 0), int(ev.get("gpus_used") or 0)
        for p in pods:
            if p.request[0] == want * UNITS and used >= 1:
                out[p] = replace(p, request=(used * UNITS, *p.request[1:]))
    elif rec.kind == "mig":
        profiles = {(w["namespace"], w["workload"]): w["profile"] for w in ev.get("workloads", [])}
        try:
            gpu = mig.load_catalog().gpu(ev.get("gpu_model"))
        except AnalysisError as error:
            return {}, {}, 0.0, f"not banked: {error}"
        shares = {w: Fraction(gpu.profile(p).slices, gpu.compute_slices) for w, p in profiles.items()}
        spot = ev.get("spot")
        for p in pods:
            profile = profiles.get((p.namespace, p.workload))
            if profile and p.request[0] == UNITS:
                moved = replace(p, request=(units(shares[(p.namespace, p.workload)]), *p.request[1:]))
                if spot is not None:
                    target = _target_pool(fleet, state.pools, rec, p.pool)
                    if target is None:
                        note = f"not banked: no price for the target node pool of {'/'.join(p.pool)}"
                        continue
                    pools[target.key] = target
                    moved = replace(moved, pool=target.key)
                out[p] = moved
        for c in (spot or {}).get("candidates", []):
            share = shares.get((c["namespace"], c["workload"]), Fraction(1))
            loss += float(c.get("interruption_cost_usd_month") or 0.0) * float(share)
    elif rec.kind == "idle-reclaim":
        for p in pods:
            gone = fleet.reclaim.get((p.pool[0], p.namespace, p.workload), frozenset())
            kept = tuple(h for h in p.hours if h not in gone)
            if kept != p.hours:
                out[p] = replace(p, hours=kept)
    elif rec.kind in ("time-slicing", "spot", "gpu-model"):
        spot = ev.get("spot") if rec.kind == "time-slicing" else None
        k = int(ev.get("replicas_per_gpu") or 1) if rec.kind == "time-slicing" else 1
        for p in pods:
            if rec.kind == "time-slicing" and p.request[0] != UNITS:
                continue
            target = _target_pool(fleet, state.pools, rec, p.pool)
            if target is None:
                note = f"not banked: no price for the target node pool of {'/'.join(p.pool)}"
                continue
            pools[target.key] = target
            request = (units(Fraction(1, k)), *p.request[1:]) if k > 1 else p.request
            out[p] = replace(p, pool=target.key, request=request)
        candidates = ev.get("candidates", []) if rec.kind == "spot" else (spot or {}).get("candidates", [])
        loss = sum(float(c.get("interruption_cost_usd_month") or 0.0) for c in candidates) / k
    out = {old: new for old, new in out.items() if new != old}
    return out, pools, loss, note


def _target_pool(fleet: NodeFleet, pools: Mapping[PoolKey, Pool], rec: Recommendation, source: PoolKey) -> Pool | None:
    """The node pool a placement change moves a pod to: the NodePool it exports (its name, instance type and
    capacity type requirements), else the node selector of its patches, same instance type and capacity."""
    cluster, group, itype, capacity = source
    found = nodepool_of(rec)
    nodepool = found.obj if found is not None else None
    if nodepool is not None:
        group = str(nodepool["metadata"]["name"])
        for q in nodepool["spec"]["template"]["spec"].get("requirements", []):
            if q.get("key") == "node.kubernetes.io/instance-type" and q.get("values"):
                itype = str(q["values"][0])
            if q.get("key") == "karpenter.sh/capacity-type" and q.get("values"):
                capacity = str(q["values"][0])
    else:
        selector = next((_selector(m.obj) for m in rec.manifests if m.patch and _selector(m.obj)), {})
        group = next(iter(selector.values()), group + "-" + rec.kind)
        if rec.kind == "spot":
            capacity = SPOT
        if rec.kind == "gpu-model":
            itype = str(rec.evidence.get("target_instance_type") or itype)
    key: PoolKey = (cluster, group, itype, capacity)
    if key in pools:
        return pools[key]
    base = pools[source]
    if itype == source[2]:
        gpus, model = base.spec.gpus, base.gpu_model
    else:
        target = instance_types().get(itype)
        if target is None:
            return None
        gpus, model = target.gpu_count, target.gpu_model
    price = fleet.catalog.gpu_hour_price(itype, capacity or ON_DEMAND, model, base.region, gpu_count=gpus)
    if price.usd_per_node_hour is None:
        return None
    return _pool(key, gpus, price.usd_per_node_hour, model, base.region, price.source)


def _selector(obj: Mapping[str, Any]) -> dict[str, str]:
    """The nodeSelector a patch sets anywhere in it (the first found; a JSON patch's ``add`` of one too)."""
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("nodeSelector"), Mapping):
                return {str(k): str(v) for k, v in item["nodeSelector"].items()}
            path, value = item.get("path"), item.get("value")
            if isinstance(path, str) and path.endswith("/nodeSelector") and isinstance(value, Mapping):
                return {str(k): str(v) for k, v in value.items()}  # a JSON patch operation
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return {}
