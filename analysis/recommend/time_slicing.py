"""Time-slicing (kind ``time-slicing``): inference workloads whose pods hold one GPU each with a low duty cycle. Per
workload, the pods one GPU can take, k = min(``time_slicing_max_replicas``, floor(duty target / p95 duty cycle),
floor(GPU memory / (peak memory x memory margin))) (time-slicing isolates neither time nor memory: the duty cycles
and the memory of the pods sharing a GPU must add up). Workloads with k >= 2 on one node group and GPU model move to
a time-sliced node pool with the smallest k among them. Savings = their held GPU-hours x (1 - 1/k) x price x M.
Skips workloads MIG claimed and claims its own: gpu-model skips them.

The pool's instance type is the one whose nodes hold the pods at the lowest cost, since clouds bill per node: four
pods at k = 3 need two L4s, and a 4-GPU g6.12xlarge would leave two idle. Candidates: the current instance type
and, on AWS, every instance type of ``analysis.instances`` with the same GPU model, each priced per node-hour by the
price catalog in the node's region and capacity type (a type with no price of its own in the catalog is rejected).
P = the pods at once (ceil of the GPUs held on average). A node takes min(GPUs x k, floor(vCPUs / CPU request),
floor(memory / memory request)) pods (``analysis.instance_resources``; each request the most of any moved pod's,
where stored: ``cpu_request``, ``memory_request_bytes``), so nodes = ceil(P / that) = at least ceil(P / k) GPUs in
whole nodes; cost = nodes x node price. A type whose node holds no pod is rejected, and so is another type whose
vCPUs and memory are unknown while a request is stored (the current type runs the pods today: it is then sized by its
GPUs alone, and is kept, so sized, when nothing fits). The cheapest wins (ties: the current type, then by name);
every candidate is in the evidence with its cost and why it lost. The kind's savings stay its GPU-hour figure; the
plan banks the nodes that go away (``analysis.recommend.node_hours``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.gpu_names import gpu_model_key
from analysis.instance_resources import InstanceResources, resources_of
from analysis.instances import instance_types
from analysis.pricing import ON_DEMAND
from analysis.recommend.context import (
    Context,
    ceil,
    group_target,
    is_aws,
    shared_note,
    sources_text,
    span_days,
    window_dict,
    workload_checks,
)
from analysis.recommend.gpu_model import pod_requests
from analysis.recommend.manifests import (
    GPU_OPERATOR_NAMESPACE,
    GPU_RESOURCE,
    node_multiple,
    node_overlay,
    node_selector_patch,
    nodepool,
    requirement,
    yaml_text,
)
from analysis.recommend.model import Manifest, Recommendation
from analysis.recommend.names import clean_text
from analysis.units import HOURS_PER_MONTH

NAME = "time-slicing"
TITLE = "Time-slice low-duty inference"
POOL_TYPE_RULE = (
    "the instance type (the current one, and on AWS every one with the same GPU model) whose nodes hold the pods at "
    "once at the lowest cost: a node takes min(GPUs x k, vCPUs / CPU request, memory / memory request) pods (each "
    "request where stored), nodes = ceil(pods at once / that), cost = nodes x the catalog's node price"
)


@dataclass(frozen=True)
class _PoolType:
    """One candidate instance type for the time-sliced pool, sized for the pods at once."""

    instance_type: str
    gpus: int
    """GPUs per node (0 when unknown)."""
    usd_per_node_hour: float | None
    source: str
    resources: InstanceResources | None
    pods_per_node: int
    nodes: int
    why: tuple[str, ...]
    """Why it cannot take the pods; empty when it can."""

    @property
    def usd_per_hour(self) -> float:
        return self.nodes * (self.usd_per_node_hour or 0.0)

    def to_dict(self, why: str) -> dict[str, Any]:
        return {
            "instance_type": self.instance_type,
            "gpus_per_node": self.gpus,
            "vcpus_per_node": self.resources.vcpus if self.resources else None,
            "memory_gib_per_node": self.resources.memory_gib if self.resources else None,
            "usd_per_node_hour": round(self.usd_per_node_hour, 6) if self.usd_per_node_hour is not None else None,
            "pods_per_node": self.pods_per_node,
            "nodes": self.nodes,
            "usd_per_hour": round(self.usd_per_hour, 6) if not self.why else None,
            "price_source": clean_text(self.source),
            "why": why,
        }


def _candidate_names(ctx: Context, itype: str, region: str | None, model: str) -> list[str]:
    """The current instance type, then (on AWS) every other one of the same GPU model, by name."""
    if not is_aws(ctx.inputs.catalog, itype, region):
        return [itype]
    key = gpu_model_key(model)
    same = sorted(
        name
        for name, t in instance_types().items()
        if name != itype and gpu_model_key(t.gpu_model) == key and is_aws(ctx.inputs.catalog, name, region)
    )
    return [itype, *same]


def _sized(
    ctx: Context,
    name: str,
    current: bool,
    capacity: str,
    region: str | None,
    model: str,
    k: int,
    pods: int,
    requests: tuple[float | None, float | None],
) -> _PoolType:
    catalog = ctx.inputs.catalog
    gpus = catalog.catalog_gpu_count(name) or 0
    why: list[str] = []
    usd: float | None = None
    source = ""
    if gpus <= 0:
        why.append(f"{name}'s GPU count is unknown")
    else:
        price = catalog.gpu_hour_price(name, capacity, model, region, gpu_count=gpus)
        usd, source = price.usd_per_node_hour, price.source
        if price.fallback or usd is None:
            why.append(f"{name} has no node price in the price catalog ({clean_text(price.source)})")
    resources = resources_of(name)
    per_node = gpus * k
    cpu, mem = requests
    if resources is None:
        if (cpu is not None or mem is not None) and not current:
            why.append(f"{name}'s vCPUs and memory are unknown, so the pods' requests cannot be checked")
    else:
        if cpu:
            per_node = min(per_node, math.floor(resources.vcpus / cpu + 1e-9))
        if mem:
            per_node = min(per_node, math.floor(resources.memory_gib / mem + 1e-9))
        if per_node <= 0 and gpus > 0:
            too_big = []
            if cpu and resources.vcpus < cpu:
                too_big.append(f"{resources.vcpus:g} vCPUs < {cpu:g} requested")
            if mem and resources.memory_gib < mem:
                too_big.append(f"{resources.memory_gib:g} GiB of memory < {mem:g} requested")
            why.append(f"a {name} node holds no pod: " + ", ".join(too_big))
            if current:  # it runs them today: sized by its GPUs alone
                per_node = gpus * k
    nodes = max(1, ceil(pods / per_node)) if per_node > 0 else 0
    return _PoolType(name, gpus, usd, source, resources, max(per_node, 0), nodes, tuple(why))


def _pool_type(
    ctx: Context,
    itype: str,
    capacity: str,
    region: str | None,
    model: str,
    k: int,
    pods: int,
    requests: tuple[float | None, float | None],
) -> tuple[_PoolType, list[dict[str, Any]]]:
    """The time-sliced pool's instance type (``POOL_TYPE_RULE``) and every candidate with its cost and why it lost."""
    candidates = [
        _sized(ctx, name, name == itype, capacity, region, model, k, pods, requests)
        for name in _candidate_names(ctx, itype, region, model)
    ]
    fits = [c for c in candidates if not c.why]
    current = candidates[0]
    best = (
        min(fits, key=lambda c: (round(c.usd_per_hour, 9), c.instance_type != itype, c.instance_type))
        if fits
        else current
    )
    considered = []
    for c in candidates:
        if c is best:
            why = "chosen: the lowest cost" if fits else "kept: no instance type fits; " + "; ".join(c.why)
        elif c.why:
            why = "; ".join(c.why)
        else:
            why = (
                f"fits, but {c.nodes} x {c.usd_per_node_hour:.4f} = {c.usd_per_hour:.4f} USD/hour >= "
                f"{best.instance_type}'s {best.usd_per_hour:.4f}"
            )
        considered.append(c.to_dict(why))
    return best, considered


def _requests(
    found: Mapping[tuple[str, str, str], tuple[float | None, float | None]], members: list[dict[str, Any]]
) -> tuple[float | None, float | None]:
    """The most any moved pod requests (vCPUs, memory GiB per GPU it holds), each None where none is stored."""
    got = [found.get((r["cluster"], r["namespace"], r["workload"]), (None, None)) for r in members]
    cpus = [c for c, _ in got if c is not None]
    mems = [m for _, m in got if m is not None]
    return (max(cpus) if cpus else None), (max(mems) if mems else None)


def _nodes_text(chosen: _PoolType | None, target_type: str | None) -> str:
    if chosen is None:
        return f"{target_type} nodes"
    return f"{chosen.nodes} {target_type} node{'s' if chosen.nodes != 1 else ''}"


def _sizing_text(chosen: _PoolType | None, pods: int, k: int) -> str:
    if chosen is None or not chosen.gpus:
        return f"ceil({pods} pods at once / {k}) GPUs"
    return (
        f"{chosen.nodes} {chosen.instance_type} node{'s' if chosen.nodes != 1 else ''} x {chosen.gpus} "
        f"GPU{'s' if chosen.gpus != 1 else ''}: ceil({pods} pods at once / "
        f"{chosen.pods_per_node} per node), a node taking min({chosen.gpus} GPU{'s' if chosen.gpus != 1 else ''} "
        f"x {k}, its vCPUs and memory / the pods' requests where stored)"
    )


def _choice_text(chosen: _PoolType | None, itype: str | None, considered: list[dict[str, Any]]) -> str:
    """The comment on why the pool's instance type was chosen, naming the runner-up."""
    if chosen is None:
        return "Instance type: the current one (unknown, so no other was considered)."
    others = [c for c in considered if c["instance_type"] != chosen.instance_type and c["usd_per_hour"] is not None]
    runner = min(others, key=lambda c: (c["usd_per_hour"], c["instance_type"]), default=None)
    text = (
        f"Instance type {chosen.instance_type}: {chosen.nodes} x {chosen.usd_per_node_hour or 0.0:.4f} = "
        f"{chosen.usd_per_hour:.4f} USD/hour ({clean_text(chosen.source)})"
    )
    if chosen.why:
        text += f", kept: no instance type fits ({'; '.join(chosen.why)})"
    elif runner is not None:
        text += (
            f", the lowest of {len(considered)} considered (next: {runner['instance_type']} "
            f"{runner['usd_per_hour']:.4f})"
        )
    if chosen.instance_type != itype:
        text += f"; instead of {itype}, which the workloads run on today"
    return text + "; every candidate and why it lost is in the evidence."


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``time-slicing`` recommendations (see the module docstring)."""
    o = ctx.options
    rows = []
    for row in ctx.single.iter_rows(named=True):
        if (row["gpu_model"], row["namespace"], row["workload"]) in ctx.claimed:
            continue
        if ctx.kind(row["namespace"], row["workload"]) not in ("inference", "service"):
            continue
        duty, peak, total = row["duty_p95"], row["peak_gib"], row["fb_total_gib"]
        if duty is None or peak is None or not total:
            continue
        by_duty = o.time_slicing_max_replicas if duty <= 0 else math.floor(o.time_slicing_duty_target / duty + 1e-9)
        by_memory = math.floor(total / max(peak * o.memory_margin, 1e-9) + 1e-9)
        k = min(o.time_slicing_max_replicas, by_duty, by_memory)
        if k >= 2:
            rows.append({**row, "k": k, "by_duty": by_duty, "by_memory": by_memory})
    out = []
    found_requests = pod_requests(ctx.devices)
    pool_keys = ("cluster", "node_group", "instance_type", "capacity_type", "region", "gpu_model")
    for key in sorted({tuple(r[k] for k in pool_keys) for r in rows}, key=lambda t: tuple(str(x) for x in t)):
        members = [r for r in rows if tuple(r[k] for k in pool_keys) == key]
        cluster, node_group, itype, capacity, region, model = key
        k = min(r["k"] for r in members)
        pool = f"{node_group}-timesliced"
        checks: list[tuple[str, object, str]] = [
            ("node pool", pool, "label value"),
            ("node pool", pool, "dns-1123 subdomain"),
        ]
        for r in members:
            checks += workload_checks(r["namespace"], r["workload"])
        if not ctx.names_ok("time-slicing", checks):
            continue
        gpu_hours = sum(r["gpu_hours"] for r in members)
        concurrent = gpu_hours / ctx.window.hours
        if concurrent < 2.0:  # fewer than two pods at once: nothing to share a GPU with
            continue
        cost = sum(r["cost_usd"] or 0.0 for r in members)
        savings = cost * (1 - 1 / k) * ctx.month
        gpus = ceil(concurrent)  # the pods at once, one GPU each today
        capacity_type = capacity or ON_DEMAND
        requests = _requests(found_requests, members)
        chosen, considered = (
            _pool_type(ctx, itype, capacity_type, region, model, k, gpus, requests) if itype else (None, [])
        )
        target_type = chosen.instance_type if chosen is not None else itype
        limit = chosen.nodes * chosen.gpus if chosen is not None and chosen.gpus else ceil(gpus / k)
        limit = node_multiple(target_type, limit)
        config = {
            "version": "v1",
            "sharing": {
                "timeSlicing": {
                    "failRequestsGreaterThanOne": True,
                    "resources": [{"name": GPU_RESOURCE, "replicas": k}],
                }
            },
        }
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"gpuledger-time-slicing-{pool}", "namespace": GPU_OPERATOR_NAMESPACE},
            "data": {pool: yaml_text(config)},
        }
        worst_duty = max(r["duty_p95"] for r in members)
        worst_mem = max(r["peak_gib"] for r in members)
        total = min(r["fb_total_gib"] for r in members)
        cm_comments = (
            f"NVIDIA device plugin config {pool}: each {model} GPU is advertised as {k} {GPU_RESOURCE}. "
            f"replicas {k} = min(max {o.time_slicing_max_replicas}, duty: floor({o.time_slicing_duty_target:g} / "
            f"p95 duty cycle {worst_duty:.2f}), memory: floor({total:.1f} GiB / (peak {worst_mem:.1f} GiB x "
            f"{o.memory_margin:g}))).",
            f"Use it: point the ClusterPolicy's devicePlugin.config.name at gpuledger-time-slicing-{pool} (or copy "
            f"its key into the ConfigMap it already names); nodes labelled nvidia.com/device-plugin.config={pool} "
            "take it.",
        )
        manifests = [Manifest(cm, cm_comments)]
        aws = is_aws(ctx.inputs.catalog, itype, region)
        if aws:
            manifests.append(
                Manifest(
                    nodepool(
                        pool,
                        requirements=[
                            requirement("node.kubernetes.io/instance-type", str(target_type)),
                            requirement("karpenter.sh/capacity-type", capacity_type),
                        ],
                        gpu_limit=limit,
                        node_class=o.karpenter_node_class,
                        consolidation="WhenEmptyOrUnderutilized",
                        consolidate_after="10m",
                        budgets=[{"nodes": "1"}],
                        labels={"nvidia.com/device-plugin.config": pool},
                    ),
                    (
                        f"Node pool {pool}: {target_type} ({capacity}) nodes whose device plugin time-slices each "
                        f"GPU {k} ways. limits {GPU_RESOURCE} {limit} = {_sizing_text(chosen, gpus, k)} (the limit "
                        "counts physical GPUs).",
                        _choice_text(chosen, itype, considered),
                        "Consolidation WhenEmptyOrUnderutilized, one node at a time: replicated inference keeps "
                        "serving while a node is replaced.",
                    ),
                )
            )
            if chosen is not None and chosen.gpus:
                manifests.append(
                    Manifest(
                        node_overlay(
                            pool,
                            nodepool=pool,
                            instance_type=chosen.instance_type,
                            capacity={GPU_RESOURCE: chosen.gpus * k},
                        ),
                        (
                            f"Node overlay {pool}: tells Karpenter that a {chosen.instance_type} node of {pool} "
                            f"advertises {GPU_RESOURCE} {chosen.gpus * k} = {chosen.gpus} GPU"
                            f"{'s' if chosen.gpus != 1 else ''} of the instance type x {k} (time-sliced), so it "
                            f"plans up to {chosen.gpus * k} one-GPU pods per node.",
                            "Needs Karpenter's NodeOverlay feature gate (Alpha; helm "
                            "settings.featureGates.nodeOverlay=true): without it Karpenter plans one pod per "
                            "physical GPU and launches more nodes than this plan counts.",
                        ),
                    )
                )
        selector = {"karpenter.sh/nodepool": pool} if aws else {"nvidia.com/device-plugin.config": pool}
        for r in members:
            kind = ctx.kind(r["namespace"], r["workload"])
            manifests.append(
                node_selector_patch(
                    kind,
                    r["namespace"],
                    r["workload"],
                    selector,
                    f"{r['namespace']}/{r['workload']}: p95 duty cycle {r['duty_p95']:.2f}"
                    f"{shared_note(r['split_by'])}, peak memory {r['peak_gib']:.1f} GiB of "
                    f"{r['fb_total_gib']:.1f}: up to {r['k']} pods per GPU; moves to {pool} ({target_type} "
                    "nodes). Remove any other node selector that pins its old node group.",
                    ctx.owner_kind(r["namespace"], r["workload"]),
                )
            )
        names = ", ".join(f"{r['namespace']}/{r['workload']}" for r in members)
        out.append(
            Recommendation(
                kind="time-slicing",
                target=group_target(cluster, node_group, members),
                change=(
                    f"Move {names} to a time-sliced node pool {pool} of {_nodes_text(chosen, target_type)}"
                    f"{'' if target_type == itype else f' instead of {itype}'} ({model}, {k} pods per GPU): "
                    f"{concurrent:.1f} GPUs held on average -> {concurrent / k:.1f}."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpu_model": model,
                    "instance_type": itype,
                    "target_instance_type": target_type,
                    "target_nodes": chosen.nodes if chosen is not None else None,
                    "pods_at_once": gpus,
                    "gpus_needed": ceil(gpus / k),
                    "cpu_request_per_pod": requests[0],
                    "memory_request_gib_per_pod": round(requests[1], 3) if requests[1] is not None else None,
                    "instance_type_rule": POOL_TYPE_RULE,
                    "instance_types_considered": considered,
                    "replicas_per_gpu": k,
                    "gpus_held_mean": round(concurrent, 4),
                    "gpu_hours": round(gpu_hours, 4),
                    "cost_usd": round(cost, 2),
                    "workloads": [
                        {
                            "namespace": r["namespace"],
                            "workload": r["workload"],
                            "workload_kind": ctx.kind(r["namespace"], r["workload"]),
                            "kind_basis": ctx.kind_basis(r["namespace"], r["workload"]),
                            "duty_p95": round(r["duty_p95"], 4),
                            "peak_mem_gib": round(r["peak_gib"], 2),
                            "gpu_memory_gib": round(r["fb_total_gib"], 2),
                            "replicas_by_duty": r["by_duty"],
                            "replicas_by_memory": r["by_memory"],
                            "gpu_hours": round(r["gpu_hours"], 4),
                            **({"split_by": r["split_by"]} if r["split_by"] else {}),
                        }
                        for r in members
                    ],
                },
                savings_usd_month=savings,
                price_source=sources_text(s for r in members for s in r["sources"]),
                disruption={
                    "pods_restarted": gpus,
                    "node_drain": False,
                    "nodes_drained": 0,
                },
                risk=(
                    "medium: time-slicing isolates neither memory nor faults: a pod that grows its memory can "
                    "OOM the others on its GPU, and latency rises when duty cycles peak together"
                ),
                confidence=min(
                    ctx.confidence(span_days(r["first_seen"], r["last_seen"]), r["gpu_minutes"]) for r in members
                ),
                assumptions=(
                    "Duty cycle = NVML utilization (share of time a kernel ran); time-sliced pods add up.",
                    f"Savings = held GPU-hours x price x (1 - 1/{k}) x {HOURS_PER_MONTH:g} / window hours: the "
                    "pods pack perfectly onto the shared GPUs.",
                ),
                manifests=tuple(manifests),
            )
        )
        ctx.claimed.update((model, r["namespace"], r["workload"]) for r in members)
    return out
