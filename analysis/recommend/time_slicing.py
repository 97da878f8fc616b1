"""Time-slicing (kind ``time-slicing``): inference workloads whose pods hold one GPU each with a low duty cycle. Per
workload, the pods one GPU can take, k = min(``time_slicing_max_replicas``, floor(duty target / p95 duty cycle),
floor(GPU memory / (peak memory x memory margin))) (time-slicing isolates neither time nor memory: the duty cycles
and the memory of the pods sharing a GPU must add up). Workloads with k >= 2 on one node group and GPU model move to
a time-sliced node pool with the smallest k among them. Savings = their held GPU-hours x (1 - 1/k) x price x M.
Skips workloads MIG claimed and claims its own: gpu-model skips them."""

from __future__ import annotations

import math

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
from analysis.recommend.manifests import (
    GPU_OPERATOR_NAMESPACE,
    GPU_RESOURCE,
    node_multiple,
    node_selector_patch,
    nodepool,
    requirement,
    yaml_text,
)
from analysis.recommend.model import Manifest, Recommendation
from analysis.units import HOURS_PER_MONTH

NAME = "time-slicing"
TITLE = "Time-slice low-duty inference"


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
        gpus = ceil(concurrent)
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
                            requirement("node.kubernetes.io/instance-type", itype),
                            requirement("karpenter.sh/capacity-type", capacity or ON_DEMAND),
                        ],
                        gpu_limit=node_multiple(itype, ceil(gpus / k)),
                        node_class=o.karpenter_node_class,
                        consolidation="WhenEmptyOrUnderutilized",
                        consolidate_after="10m",
                        budgets=[{"nodes": "1"}],
                        labels={"nvidia.com/device-plugin.config": pool},
                    ),
                    (
                        f"Node pool {pool}: {itype} ({capacity}) nodes whose device plugin time-slices each GPU "
                        f"{k} ways. limits {GPU_RESOURCE} {node_multiple(itype, ceil(gpus / k))} = "
                        f"ceil({concurrent:.2f} GPUs these workloads held on average / {k}), in whole {itype} nodes "
                        "(the limit counts physical GPUs).",
                        "Consolidation WhenEmptyOrUnderutilized, one node at a time: replicated inference keeps "
                        "serving while a node is replaced.",
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
                    f"{r['fb_total_gib']:.1f}: up to {r['k']} pods per GPU; moves to {pool}. Remove any other node "
                    "selector that pins its old node group.",
                    ctx.owner_kind(r["namespace"], r["workload"]),
                )
            )
        names = ", ".join(f"{r['namespace']}/{r['workload']}" for r in members)
        out.append(
            Recommendation(
                kind="time-slicing",
                target=group_target(cluster, node_group, members),
                change=(
                    f"Move {names} to a time-sliced node pool {pool} ({model}, {k} pods per GPU): "
                    f"{concurrent:.1f} GPUs held on average -> {concurrent / k:.1f}."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpu_model": model,
                    "instance_type": itype,
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
