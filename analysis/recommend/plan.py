"""One consistent plan per cluster, built from the ranked recommendations (pure).

A recommendation that patches workloads (``gpu-count``, ``mig``, ``time-slicing``, ``gpu-model``, ``spot``,
``idle-reclaim``: every kind whose manifests hold a patch of a workload's owner) is a change to those workloads. Each
workload gets at most one change in the applied plan: walking the ranking (``model.ranked``) highest first, a
recommendation is applied when none of its workloads has a change yet; otherwise:

- ``spot`` + ``time-slicing`` on the same workloads combine into one node pool: the time-sliced pool on spot
  capacity, when both are Karpenter NodePools of the same instance type and every workload of the time-sliced pool
  is a spot candidate. The combined saving = the time-slicing saving + each moved workload's net spot saving / k
  (time-slicing leaves 1/k of its GPU-hours to put on spot; ``COMBINE_RULE``).
- ``spot`` + ``mig`` on the same workloads combine into one node pool: a spot NodePool ``<spot pool>-mig`` whose
  nodes carry the label ``nvidia.com/mig.config: <the MIG change's mig-parted config>``, so the GPU Operator's
  mig-manager partitions each node it launches, when the spot change exports a Karpenter NodePool, the MIG change's
  nodes are of the spot pool's instance type and every MIG workload is a spot candidate. One patch per workload
  owner requests the MIG profile and selects that pool; the mig-parted ConfigMap is still exported. The combined
  saving = the MIG saving + each moved workload's net spot saving x its MIG slices / the GPU's slices (a slice is
  that share of a spot GPU; ``MIG_COMBINE_RULE``).
- a ``spot`` pool is separable (each candidate has its own net saving): the workloads that already have a change
  (or that a combined pool took) leave it, and it is applied for the rest with the sum of their savings;
- anything else is an **alternative**: listed in the cluster's README.md and index.json with what it would have
  saved applied alone and which applied change it lost to, never written as a patch.

A MIG change and a spot pool that cannot combine (another instance type, a MIG workload that is no spot candidate,
no Karpenter NodePool) stay exclusive: the lower-ranked of the two is an alternative. ``autoscaling`` (per node group,
no workload patch) is always applied.

The plan's total (``ClusterPlan.savings_usd_month``, summed over clusters in ``Plan``) is the sum of the applied
changes; per-kind figures are the kind's recommendations as built, each "if applied alone".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import yaml

from analysis import mig
from analysis.errors import AnalysisError
from analysis.pricing import SPOT
from analysis.recommend.manifests import GPU_RESOURCE, node_multiple, node_overlay, workload_patch
from analysis.recommend.mig_slices import mig_pod_spec, mig_resource
from analysis.recommend.model import (
    Manifest,
    Recommendation,
    RecommendationSet,
    Workload,
    nodepool_of,
    workloads_of,
)
from analysis.recommend.names import clean_text, is_dns_subdomain, is_label_value
from analysis.recommend.node_hours import Banked, ClusterNodes, NodeFleet, bank

NO_CLUSTER = "no-cluster"
"""The folder of changes whose target names no cluster (a MIG change over nodes of several clusters)."""
COMBINE_RULE = (
    "spot + time-slicing on the same workloads: one time-sliced node pool on spot capacity; saving = time-slicing "
    "saving + each moved workload's net spot saving / k"
)
MIG_COMBINE_RULE = (
    "spot + mig on the same workloads: one spot node pool whose nodes carry the MIG config (nvidia.com/mig.config); "
    "saving = MIG saving + each moved workload's net spot saving x its MIG slices / the GPU's slices"
)
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
"""The node label the GPU Operator's mig-manager watches: it applies the mig-parted config of that name to the node."""
PLAN_RULE = (
    "each workload gets at most one change (the highest ranked); a spot pool loses only the workloads that already "
    "have one; spot + time-slicing and spot + mig combine into one pool; every other competing change is an "
    "alternative"
)
COMBINES = ("time-slicing", "mig")
"""The kinds that combine with a spot pool over the same workloads into one node pool."""


@dataclass(frozen=True)
class Alternative:
    """A change left out of the plan for ``workloads``, which have ``instead`` (kind, fleet rank) applied."""

    rec: Recommendation
    rank: int
    workloads: tuple[Workload, ...]
    instead: tuple[tuple[str, int], ...]
    savings_usd_month: float
    """What it saves applied alone for these workloads (the whole change when it cannot be split); for a change
    left out because it adds cost, what it would bank (negative)."""
    reason: str = ""
    """Why it is left out when no applied change took its workloads (it would add node-hours' cost)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            **({"reason": self.reason} if self.reason else {}),
            "rank": self.rank,
            "kind": self.rec.kind,
            "change": self.rec.change,
            "workloads": [f"{ns}/{wl}" for ns, wl in self.workloads],
            "instead": [{"kind": k, "rank": r} for k, r in self.instead],
            "savings_usd_month_if_applied_alone": round(self.savings_usd_month, 2),
            "confidence": round(self.rec.confidence, 3),
        }


@dataclass(frozen=True)
class Applied:
    """A change in the plan: ``rec`` as applied (a spot pool without the workloads that left it, a time-sliced pool
    on spot capacity), at ``rank`` in the fleet's ranking, ``note`` saying how it differs from the ranked one."""

    rec: Recommendation
    rank: int
    note: str = ""
    banked: Banked | None = None
    """What it saves on the bill: the node-hours it removes (``node_hours.bank``); None without pod-hours."""

    @property
    def savings_usd_month(self) -> float:
        """The node-hours it removes x their price (``banked``), else its own figure."""
        return self.banked.savings_usd_month if self.banked is not None else self.rec.savings_usd_month

    @property
    def expected_savings_usd_month(self) -> float:
        return self.savings_usd_month * self.rec.confidence


@dataclass(frozen=True)
class ClusterPlan:
    cluster: str
    """The cluster's name as telemetry gives it (``NO_CLUSTER`` when none)."""
    folder: str
    applied: tuple[Applied, ...]
    alternatives: tuple[Alternative, ...]
    alone: dict[str, float]
    """Per kind, the savings of all its recommendations for this cluster as built: each "if applied alone"."""
    nodes: ClusterNodes | None = None
    """The cluster's nodes seen, packed today and after the plan (None without pod-hours)."""

    @property
    def savings_usd_month(self) -> float:
        return sum(a.savings_usd_month for a in self.applied)

    @property
    def expected_savings_usd_month(self) -> float:
        return sum(a.expected_savings_usd_month for a in self.applied)


@dataclass(frozen=True)
class Plan:
    result: RecommendationSet
    clusters: tuple[ClusterPlan, ...]

    @property
    def applied(self) -> list[Applied]:
        """Every cluster's applied changes, in fleet rank order."""
        return sorted((a for c in self.clusters for a in c.applied), key=lambda a: a.rank)

    @property
    def savings_usd_month(self) -> float:
        return sum(c.savings_usd_month for c in self.clusters)

    @property
    def expected_savings_usd_month(self) -> float:
        return sum(c.expected_savings_usd_month for c in self.clusters)


def folder_of(cluster: str | None) -> str:
    """A cluster's folder: its name when it is a safe path segment (lower-case letters, digits, '-', '.'), else
    ``cluster-<n>`` from its cleaned characters' code points (stable, never a path)."""
    if cluster is None:
        return NO_CLUSTER
    ok = 0 < len(cluster) <= 63 and all(c.isascii() and (c.islower() or c.isdigit() or c in "-.") for c in cluster)
    if ok and cluster[0].isalnum() and cluster[-1].isalnum():
        return cluster
    return "cluster-" + format(sum((i + 1) * ord(c) for i, c in enumerate(cluster)) % 16**8, "08x")


def build_plan(result: RecommendationSet) -> Plan:
    """The plan of every cluster in ``result`` (see the module docstring)."""
    days = float(result.assumptions.get("confidence_days") or 7.0)
    window_days = result.window.hours / 24.0
    ranks = {id(r): i for i, r in enumerate(result.items, 1)}
    by_cluster: dict[str, list[Recommendation]] = {}
    for r in result.items:
        by_cluster.setdefault(r.target.get("cluster") or NO_CLUSTER, []).append(r)
    folders: dict[str, str] = {}
    plans = []
    for cluster in sorted(by_cluster):
        folder = folder_of(None if cluster == NO_CLUSTER else cluster)
        while folder in folders.values():
            folder += "-x"
        folders[cluster] = folder
        items = by_cluster[cluster]
        nodes = None
        if result.fleet is None:
            applied, alternatives = _plan(items, ranks, days, window_days)
        else:
            applied, alternatives, nodes = _banked(result.fleet, cluster, items, ranks, days, window_days)
        alone: dict[str, float] = {}
        for r in items:
            alone[r.kind] = alone.get(r.kind, 0.0) + r.savings_usd_month
        plans.append(ClusterPlan(cluster, folder, tuple(applied), tuple(alternatives), alone, nodes))
    return Plan(result, tuple(plans))


def _banked(
    fleet: NodeFleet,
    cluster: str,
    items: Sequence[Recommendation],
    ranks: dict[int, int],
    days: float,
    window_days: float,
) -> tuple[list[Applied], list[Alternative], ClusterNodes]:
    """The plan with each change banked by node-hours (``node_hours.bank``); a change that would add cost leaves
    the plan (an alternative with the reason) and the plan is made again without it."""
    left = list(items)
    costly: list[Alternative] = []
    while True:
        applied, alternatives = _plan(left, ranks, days, window_days)
        banked, nodes = bank(fleet, None if cluster == NO_CLUSTER else cluster, [a.rec for a in applied])
        worse = [(a, b) for a, b in zip(applied, banked, strict=True) if b.adds_cost]
        if not worse:
            done = [replace(a, banked=b) for a, b in zip(applied, banked, strict=True)]
            return done, [*alternatives, *costly], nodes
        for a, b in worse:
            original = next(r for r in left if ranks[id(r)] == a.rank)
            costly.append(Alternative(original, a.rank, workloads_of(original), (), b.savings_usd_month, b.note))
            left.remove(original)


def _plan(
    items: Sequence[Recommendation], ranks: dict[int, int], days: float, window_days: float
) -> tuple[list[Applied], list[Alternative]]:
    applied: list[Applied] = []
    alternatives: list[Alternative] = []
    owner: dict[Workload, int] = {}
    """workload -> index in ``applied`` of its change."""

    def take(entry: Applied, index: int | None = None) -> None:
        if index is None:
            applied.append(entry)
            index = len(applied) - 1
        else:
            applied[index] = entry
        for w in workloads_of(entry.rec):
            owner[w] = index

    for r in items:
        rank = ranks[id(r)]
        mine = workloads_of(r)
        taken = [w for w in mine if w in owner]
        if not taken:
            take(Applied(r, rank))
            continue
        holders = sorted({owner[w] for w in taken})
        if r.kind == "spot":
            for i in holders:
                held = applied[i]
                shared = [w for w in taken if owner[w] == i]
                if _combinable(held.rec, r):
                    take(replace(held, rec=_on_spot(held.rec, r), note=_combined_note(held.rec.kind, rank)), i)
                else:
                    alternatives.append(_alternative(r, rank, shared, [held], _candidate_savings(r, shared)))
            rest = [w for w in mine if w not in taken]
            if rest:
                take(Applied(_without(r, taken, days, window_days), rank, _reduced_note(r, taken)))
            continue
        if r.kind in COMBINES and len(holders) == 1 and set(taken) == set(mine):
            i = holders[0]
            held = applied[i]
            if held.rec.kind == "spot" and _combinable(r, held.rec):
                remaining = [w for w in workloads_of(held.rec) if w not in set(mine)]
                if remaining:
                    take(replace(held, rec=_without(held.rec, mine, days, window_days)), i)
                    for w in mine:
                        del owner[w]
                    take(Applied(_on_spot(r, held.rec), rank, _combined_note(r.kind, held.rank)))
                else:
                    take(Applied(_on_spot(r, held.rec), rank, _combined_note(r.kind, held.rank)), i)
                continue
        alternatives.append(_alternative(r, rank, taken, [applied[i] for i in holders], r.savings_usd_month))
    return applied, alternatives


def _alternative(
    r: Recommendation, rank: int, workloads: Iterable[Workload], holders: Sequence[Applied], savings: float
) -> Alternative:
    return Alternative(r, rank, tuple(workloads), tuple((h.rec.kind, h.rank) for h in holders), savings)


def _combinable(change: Recommendation, spot: Recommendation) -> bool:
    """``change`` (time-slicing or MIG, not yet on spot) and the spot pool can be one node pool."""
    if "spot" in change.evidence or nodepool_of(spot) is None:
        return False
    if change.kind == "time-slicing":
        return _sliced_combinable(change, spot)
    if change.kind == "mig":
        return _mig_combinable(change, spot)
    return False


def _sliced_combinable(sliced: Recommendation, spot: Recommendation) -> bool:
    """Both are Karpenter NodePools of one instance type (the time-sliced pool's own, which may not be the one its
    workloads run on), and every workload of the time-sliced pool is a spot candidate of ``spot``."""
    if nodepool_of(sliced) is None:
        return False
    pool_type = sliced.evidence.get("target_instance_type") or sliced.evidence.get("instance_type")
    if pool_type != spot.evidence.get("instance_type"):
        return False
    return set(workloads_of(sliced)) <= set(workloads_of(spot))


def _mig_combinable(change: Recommendation, spot: Recommendation) -> bool:
    """The MIG change's nodes are of an instance type the spot NodePool launches (its mig-parted layout is per GPU
    of that node), it names its cluster and its config, every MIG workload is a spot candidate whose containers are
    known, its GPU model is in the MIG catalog, and the combined pool's name is a valid NodePool name."""
    ev = change.evidence
    pool = nodepool_of(spot)
    if pool is None or change.target.get("cluster") is None or not ev.get("mig_config"):
        return False
    if ev.get("instance_type") is None or ev.get("instance_type") not in _instance_types(pool.obj):
        return False
    if not set(workloads_of(change)) <= set(workloads_of(spot)):
        return False
    if any(w.get("containers") is None for w in ev.get("workloads", [])):
        return False
    try:
        mig.load_catalog().gpu(ev.get("gpu_model"))
    except AnalysisError:
        return False
    name = _mig_pool_name(pool.obj)
    return is_label_value(name) and is_dns_subdomain(name)


def _instance_types(pool: dict[str, Any]) -> list[str]:
    """The instance types a NodePool's ``node.kubernetes.io/instance-type`` requirement allows."""
    return [
        str(v)
        for q in pool["spec"]["template"]["spec"].get("requirements", [])
        if q.get("key") == "node.kubernetes.io/instance-type" and q.get("operator") == "In"
        for v in q.get("values", [])
    ]


def _mig_pool_name(spot_pool: dict[str, Any]) -> str:
    return f"{spot_pool['metadata']['name']}-mig"


def _candidates(spot: Recommendation, workloads: Iterable[Workload]) -> list[dict[str, Any]]:
    wanted = set(workloads)
    return [c for c in spot.evidence.get("candidates", []) if (c["namespace"], c["workload"]) in wanted]


def _candidate_savings(spot: Recommendation, workloads: Iterable[Workload]) -> float:
    return sum(float(c["net_savings_usd_month"]) for c in _candidates(spot, workloads))


def _on_spot(change: Recommendation, spot: Recommendation) -> Recommendation:
    """``change`` (``_combinable`` with ``spot``) as one node pool on spot capacity."""
    return _mig_on_spot(change, spot) if change.kind == "mig" else _sliced_on_spot(change, spot)


def _sliced_on_spot(sliced: Recommendation, spot: Recommendation) -> Recommendation:
    """The time-sliced pool on spot capacity (``COMBINE_RULE``)."""
    k = int(sliced.evidence["replicas_per_gpu"])
    moved = _candidates(spot, workloads_of(sliced))
    extra = sum(float(c["net_savings_usd_month"]) for c in moved) / k
    manifests = []
    for m in sliced.manifests:
        if m is nodepool_of(sliced):
            obj = _with_capacity(m.obj, SPOT)
            why = (
                f"On spot capacity (combined with the spot change for the same workloads): interruption risk "
                f"{spot.evidence.get('interruption_risk')} of instances per month (AWS Spot Advisor)."
            )
            m = Manifest(obj, (*m.comments, why), m.patch)
        manifests.append(m)
    return replace(
        sliced,
        change=f"{sliced.change} On spot capacity (interruption risk {spot.evidence.get('interruption_risk')}).",
        evidence={
            **sliced.evidence,
            "spot": {
                "combine_rule": COMBINE_RULE,
                "interruption_risk": spot.evidence.get("interruption_risk"),
                "candidates": moved,
                "net_spot_savings_usd_month": round(extra * k, 2),
                "replicas_per_gpu": k,
                "added_savings_usd_month": round(extra, 2),
            },
        },
        savings_usd_month=sliced.savings_usd_month + extra,
        price_source="; ".join(sorted({*sliced.price_source.split("; "), *spot.price_source.split("; ")} - {""})),
        risk=f"{sliced.risk}; and {spot.risk}",
        assumptions=(*sliced.assumptions, *spot.assumptions, COMBINE_RULE),
        manifests=tuple(manifests),
    )


def _mig_on_spot(change: Recommendation, spot: Recommendation) -> Recommendation:
    """The MIG change on a spot NodePool that carries its mig-parted config (``MIG_COMBINE_RULE``): the pool's nodes
    are labelled ``nvidia.com/mig.config``, each workload's one patch requests its MIG profile and selects the pool.

    NVIDIA GPU Operator, "GPU Operator with MIG" (docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/
    gpu-operator-mig.html): mig-manager watches each node's ``nvidia.com/mig.config`` label and applies the
    mig-parted config of that name from the ConfigMap ``migManager.config.name`` names; the labels are per node
    (NVIDIA/mig-parted#194), so a NodePool's ``template.metadata.labels`` puts it on every node Karpenter launches.
    A node that joins with the label already set has been seen to need it set again (NVIDIA/gpu-operator#2670):
    the pods request ``nvidia.com/mig-<profile>``, which a node advertises only once partitioned, so they never run
    on whole GPUs; the comment says what to check."""
    ev = change.evidence
    gpu = mig.load_catalog().gpu(ev["gpu_model"])
    itype = str(ev["instance_type"])
    config = str(ev["mig_config"])
    risk = spot.evidence.get("interruption_risk")
    spot_pool = nodepool_of(spot)
    assert spot_pool is not None
    name = _mig_pool_name(spot_pool.obj)
    profiles = {(w["namespace"], w["workload"]): w for w in ev.get("workloads", [])}
    share = {w: Fraction(gpu.profile(p["profile"]).slices, gpu.compute_slices) for w, p in profiles.items()}
    moved = [
        {**c, "mig_share_of_gpu": str(share[(c["namespace"], c["workload"])])}
        for c in _candidates(spot, workloads_of(change))
    ]
    net = sum(float(c["net_savings_usd_month"]) for c in moved)
    extra = sum(float(c["net_savings_usd_month"]) * share[(c["namespace"], c["workload"])] for c in moved)
    limit = node_multiple(itype, int(ev.get("gpus_needed") or 1))
    template = spot_pool.obj["spec"]["template"]
    labels = {**template.get("metadata", {}).get("labels", {}), MIG_CONFIG_LABEL: config}
    pool_obj = {
        **spot_pool.obj,
        "metadata": {**spot_pool.obj["metadata"], "name": name},
        "spec": {
            **spot_pool.obj["spec"],
            "template": {**template, "metadata": {**template.get("metadata", {}), "labels": labels}},
            "limits": {**spot_pool.obj["spec"]["limits"], GPU_RESOURCE: str(limit)},
        },
    }
    pool_comments = (
        f"Spot node pool {name}: {itype} on spot, interruption risk {risk} of instances per month (AWS Spot "
        f"Advisor), combined with the MIG change for the same workloads: every node it launches carries "
        f"{MIG_CONFIG_LABEL}={config}, so the GPU Operator's mig-manager partitions it with that mig-parted config. "
        f"limits {GPU_RESOURCE} {limit} = the {ev.get('gpus_needed')} GPU(s) partitioned, in whole nodes.",
        *spot_pool.comments[1:],
        f"Check a new node's nvidia.com/mig.config.state=success; if it stays pending, set {MIG_CONFIG_LABEL} on it "
        "again (NVIDIA/gpu-operator#2670). Its pods request MIG instances, so none runs before the partition.",
    )
    spot_patches = {
        (m.obj["metadata"].get("namespace"), m.obj["metadata"]["name"]): m for m in spot.manifests if m.patch
    }
    candidates = {(c["namespace"], c["workload"]): c for c in moved}
    manifests: list[Manifest] = []
    for m in change.manifests:
        if not m.patch:
            if m.obj.get("kind") == "ConfigMap":
                use = (
                    f"Use it: point the ClusterPolicy at it (spec.migManager.config.name="
                    f"{m.obj['metadata']['name']}, spec.mig.strategy=mixed); the spot NodePool {name} labels each "
                    f"node it launches {MIG_CONFIG_LABEL}={config}: no node to label by hand."
                )
                m = Manifest(m.obj, (*m.comments[:1], use), m.patch, m.patch_type)
            manifests.append(m)
            continue
        ns, wl = m.obj["metadata"].get("namespace"), m.obj["metadata"]["name"]
        w = profiles[(ns, wl)]
        pod_spec = {"nodeSelector": {"karpenter.sh/nodepool": name}, **mig_pod_spec(w["profile"], w["containers"])}
        whys = (m.comments[0], spot_patches[(ns, wl)].comments[0])
        kind = str(candidates[(ns, wl)].get("workload_kind") or "inference")
        manifests.append(workload_patch(kind, ns, wl, pod_spec, whys, m.obj["kind"]))
    manifests.insert(1, Manifest(pool_obj, pool_comments))
    per_node = _mig_per_node(change, config)
    if per_node:
        capacity = {mig_resource(p): n for p, n in per_node.items()}
        overlay_comments = (
            f"Node overlay {name}: tells Karpenter that a {itype} node of {name} advertises "
            + ", ".join(f"{r} {n}" for r, n in sorted(capacity.items()))
            + f" (the instances of each profile per node: mig-parted config {config}'s layout per GPU, summed over "
            "the node's partitioned GPUs). Karpenter's instance-type data knows no MIG resources, so without it no "
            "node is launched for the pods.",
            "Needs Karpenter's NodeOverlay feature gate (Alpha; helm settings.featureGates.nodeOverlay=true).",
        )
        overlay = node_overlay(name, nodepool=name, instance_type=itype, capacity=capacity)
        manifests.insert(2, Manifest(overlay, overlay_comments))
    return replace(
        change,
        change=f"{change.change} On spot node pool {name} ({itype}, interruption risk {risk}), its nodes "
        f"partitioned by {MIG_CONFIG_LABEL}={config}.",
        evidence={
            **ev,
            "spot": {
                "combine_rule": MIG_COMBINE_RULE,
                "node_pool": name,
                "interruption_risk": risk,
                "candidates": moved,
                "net_spot_savings_usd_month": round(net, 2),
                "added_savings_usd_month": round(extra, 2),
            },
        },
        savings_usd_month=change.savings_usd_month + float(extra),
        price_source="; ".join(sorted({*change.price_source.split("; "), *spot.price_source.split("; ")} - {""})),
        risk=f"{change.risk}; and {spot.risk}",
        assumptions=(*change.assumptions, *spot.assumptions, MIG_COMBINE_RULE),
        manifests=tuple(manifests),
    )


def _mig_per_node(change: Recommendation, config: str) -> dict[str, int]:
    """Instances of each MIG profile on one node: the ``mig-devices`` of config ``config`` in the mig-parted
    ConfigMap the MIG change exports, times the devices each entry names (device i takes layout i; the node's
    other GPUs stay whole). Empty when the change exports no such config."""
    counts: dict[str, int] = {}
    for m in change.manifests:
        text = m.obj.get("data", {}).get("config.yaml") if m.obj.get("kind") == "ConfigMap" else None
        if text is None:
            continue
        for entry in yaml.safe_load(text).get("mig-configs", {}).get(config, []):
            devices = entry.get("devices")
            if not entry.get("mig-enabled") or not isinstance(devices, list):
                continue
            for profile, n in entry.get("mig-devices", {}).items():
                counts[profile] = counts.get(profile, 0) + int(n) * len(devices)
    return dict(sorted(counts.items()))


def _with_capacity(pool: dict[str, Any], capacity: str) -> dict[str, Any]:
    spec = pool["spec"]["template"]["spec"]
    requirements = [
        {**q, "values": [capacity]} if q.get("key") == "karpenter.sh/capacity-type" else q for q in spec["requirements"]
    ]
    template = {**pool["spec"]["template"], "spec": {**spec, "requirements": requirements}}
    return {**pool, "spec": {**pool["spec"], "template": template}}


def _without(spot: Recommendation, gone: Iterable[Workload], days: float, window_days: float) -> Recommendation:
    """A spot pool without the candidates in ``gone``: their patches and savings leave it; confidence is recomputed
    on the candidates that stay (the kind's rule); the pool's GPU limit, a cap, stays."""
    gone_set = set(gone)
    kept = [c for c in spot.evidence.get("candidates", []) if (c["namespace"], c["workload"]) not in gone_set]
    manifests = tuple(
        m
        for m in spot.manifests
        if not (m.patch and (m.obj["metadata"].get("namespace"), m.obj["metadata"]["name"]) in gone_set)
    )
    gpu_minutes = sum(float(c.get("gpu_hours") or 0.0) for c in kept) * 60
    pool = nodepool_of(spot)
    name = pool.obj["metadata"]["name"] if pool is not None else "a spot node pool"
    names = ", ".join(f"{c['namespace']}/{c['workload']}" for c in kept)
    return replace(
        spot,
        change=f"Run {names} on a spot node pool {name} ({spot.evidence.get('instance_type')}): interruption risk "
        f"{spot.evidence.get('interruption_risk')} per month.",
        evidence={**spot.evidence, "candidates": kept},
        savings_usd_month=sum(float(c["net_savings_usd_month"]) for c in kept),
        disruption={**spot.disruption, "pods_restarted": sum(int(c.get("replicas") or 1) for c in kept)},
        confidence=max(0.0, min(1.0, min(window_days, gpu_minutes / 1440.0) / days)),
        manifests=manifests,
    )


def _reduced_note(r: Recommendation, gone: Sequence[Workload]) -> str:
    return clean_text(
        f"without {', '.join(f'{ns}/{wl}' for ns, wl in gone)} (a higher-ranked change applies to them); "
        "the pool's GPU limit, a cap, stays as sized for every candidate"
    )


def _combined_note(kind: str, rank: int) -> str:
    pool = "spot node pool carrying the MIG config" if kind == "mig" else "time-sliced node pool on spot capacity"
    return f"combined with the spot change ranked {rank}: one {pool}"
