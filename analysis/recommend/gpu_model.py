"""Cheaper GPU models (kind ``gpu-model``): a workload (not training: multi-GPU jobs need the interconnect) whose
pods hold one GPU each, whose compute (p99 of ``busy_fraction`` x compute margin x the current model's dense BF16
TFLOPS) and memory (peak x memory margin) fit a cheaper model's (``analysis.gpu_specs``), on a one-GPU instance type
of the same cloud from the price catalog. Savings = held GPU-hours x (price now - target GPU-hour price) x M. Skips
workloads MIG or time-slicing claimed."""

from __future__ import annotations

from dataclasses import dataclass

from analysis.gpu_names import gpu_model_key
from analysis.gpu_specs import gpu_spec
from analysis.instances import instance_types
from analysis.pricing import ON_DEMAND
from analysis.recommend.context import (
    Context,
    catalog_entry,
    is_aws,
    shared_note,
    sources_text,
    span_days,
    window_dict,
    workload_checks,
)
from analysis.recommend.manifests import (
    GPU_RESOURCE,
    node_multiple,
    node_selector_patch,
    nodepool,
    requirement,
)
from analysis.recommend.model import Manifest, Recommendation
from analysis.recommend.names import clean_text
from analysis.units import HOURS_PER_MONTH

NAME = "gpu-model"
TITLE = "Move to a cheaper GPU model"


@dataclass(frozen=True)
class _Target:
    instance_type: str
    gpu_model: str
    usd_per_gpu_hour: float
    source: str
    memory_gib: float
    tflops: float
    tflops_source: str


def _targets(ctx: Context, itype: str | None, capacity: str | None, region: str | None) -> list[_Target]:
    """One-GPU instance types of the current node's cloud, each with its GPU-hour price (from the price catalog)."""
    catalog = ctx.inputs.catalog
    entry = catalog_entry(catalog, itype, region)
    if entry is None:
        return []
    memory = {gpu_model_key(t.gpu_model): float(t.gpu_memory_gib) for t in instance_types().values()}
    out = []
    for (name, entry_region), e in sorted(catalog.entries.items()):
        if e.cloud != entry.cloud or entry_region != entry.region or e.gpu_count != 1:
            continue
        spec = gpu_spec(e.gpu_model)
        mem = memory.get(gpu_model_key(e.gpu_model))
        if spec is None or mem is None or e.on_demand_usd_per_hour is None:
            continue
        price = catalog.gpu_hour_price(name, capacity or ON_DEMAND, e.gpu_model, entry_region)
        if price.fallback:
            continue
        out.append(
            _Target(name, e.gpu_model, price.usd_per_gpu_hour, price.source, mem, spec.dense_bf16_tflops, spec.source)
        )
    return out


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``gpu-model`` recommendations (see the module docstring)."""
    o = ctx.options
    chosen = []
    for row in ctx.single.iter_rows(named=True):
        ns, wl, model = row["namespace"], row["workload"], row["gpu_model"]
        if (model, ns, wl) in ctx.claimed or ctx.kind(ns, wl) in ("training",):
            continue
        spec = gpu_spec(model)
        if spec is None or row["busy_p99"] is None or row["peak_gib"] is None or not row["gpu_hours"]:
            continue
        price_now = (row["cost_usd"] or 0.0) / row["gpu_hours"]
        compute_need = row["busy_p99"] * o.compute_margin * spec.dense_bf16_tflops
        memory_need = row["peak_gib"] * o.memory_margin
        fits = [
            t
            for t in _targets(ctx, row["instance_type"], row["capacity_type"], row["region"])
            if gpu_model_key(t.gpu_model) != gpu_model_key(model)
            and t.memory_gib >= memory_need
            and t.tflops >= compute_need
            and t.usd_per_gpu_hour < price_now
        ]
        if not fits:
            continue
        best = min(fits, key=lambda t: (t.usd_per_gpu_hour, t.instance_type))
        chosen.append((row, best, price_now, compute_need, memory_need, spec))
    out = []
    pool_gpus: dict[tuple[str, str, str], int] = {}
    for row, best, *_ in chosen:
        key = (row["cluster"], best.instance_type, row["capacity_type"] or ON_DEMAND)
        pool_gpus[key] = pool_gpus.get(key, 0) + int(row["gpus"])
    for row, best, price_now, compute_need, memory_need, spec in chosen:
        ns, wl, model = row["namespace"], row["workload"], row["gpu_model"]
        capacity = row["capacity_type"] or ON_DEMAND
        pool = f"gpuledger-{best.instance_type.replace('.', '-')}-{capacity}"
        if not ctx.names_ok(
            "gpu-model",
            [*workload_checks(ns, wl), ("node pool", pool, "label value"), ("node pool", pool, "dns-1123 subdomain")],
        ):
            continue
        kind = ctx.kind(ns, wl)
        manifests = []
        aws = is_aws(ctx.inputs.catalog, best.instance_type, row["region"])
        target_spec = gpu_spec(best.gpu_model)
        if aws and target_spec is not None:
            limit = node_multiple(best.instance_type, pool_gpus[(row["cluster"], best.instance_type, capacity)])
            manifests.append(
                Manifest(
                    nodepool(
                        pool,
                        requirements=[
                            requirement("karpenter.k8s.aws/instance-family", best.instance_type.split(".")[0]),
                            requirement("karpenter.k8s.aws/instance-gpu-name", target_spec.karpenter_gpu_name),
                            requirement("node.kubernetes.io/instance-type", best.instance_type),
                            requirement("karpenter.sh/capacity-type", capacity),
                        ],
                        gpu_limit=limit,
                        node_class=o.karpenter_node_class,
                        consolidation="WhenEmptyOrUnderutilized",
                        consolidate_after="10m",
                        budgets=[{"nodes": "1"}],
                    ),
                    (
                        f"Node pool {pool}: {best.instance_type} ({best.gpu_model}, {capacity}) at "
                        f"{best.usd_per_gpu_hour:.4f} USD/GPU-hour ({clean_text(best.source)}). limits "
                        f"{GPU_RESOURCE} {limit} = the GPUs the workloads moved here held.",
                    ),
                )
            )
        selector = {"karpenter.sh/nodepool": pool} if aws else {"node.kubernetes.io/instance-type": best.instance_type}
        manifests.append(
            node_selector_patch(
                kind,
                ns,
                wl,
                selector,
                f"{ns}/{wl}: {model} -> {best.gpu_model}: needs {compute_need:.0f} TFLOPS (p99 "
                f"{row['busy_p99']:.2f} of {spec.dense_bf16_tflops:g} x {o.compute_margin:g}) of "
                f"{best.tflops:g}, {memory_need:.1f} GiB of {best.memory_gib:g} GiB. Remove any other node "
                "selector that pins its old node group.",
            )
        )
        savings = row["gpu_hours"] * (price_now - best.usd_per_gpu_hour) * ctx.month
        out.append(
            Recommendation(
                kind="gpu-model",
                target={"cluster": row["cluster"], "node_group": row["node_group"], "namespace": ns, "workload": wl},
                change=(
                    f"Move {ns}/{wl} from {model} ({row['instance_type']}) to {best.gpu_model} "
                    f"({best.instance_type}): its compute{shared_note(row['split_by'])} and memory fit, at "
                    f"{best.usd_per_gpu_hour:.2f} instead of {price_now:.2f} USD per GPU-hour."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpu_model": model,
                    "instance_type": row["instance_type"],
                    "target_gpu_model": best.gpu_model,
                    "target_instance_type": best.instance_type,
                    "busy_p99": round(row["busy_p99"], 4),
                    "compute_need_tflops": round(compute_need, 1),
                    "target_tflops": best.tflops,
                    "peak_mem_gib": round(row["peak_gib"], 2),
                    "memory_need_gib": round(memory_need, 2),
                    "target_memory_gib": best.memory_gib,
                    "gpu_hours": round(row["gpu_hours"], 4),
                    "usd_per_gpu_hour_now": round(price_now, 4),
                    "usd_per_gpu_hour_target": round(best.usd_per_gpu_hour, 4),
                    "gpus_held": int(row["gpus"]),
                    **({"split_by": row["split_by"]} if row["split_by"] else {}),
                },
                savings_usd_month=savings,
                price_source=sources_text([*row["sources"], f"target: {best.source}"]),
                disruption={"pods_restarted": int(row["gpus"]), "node_drain": False, "nodes_drained": 0},
                risk=(
                    "medium: peak TFLOPS is a proxy; memory bandwidth, interconnect and FP8 support differ "
                    "between models, and the new instance type's CPU and memory must still fit the pod's requests"
                ),
                confidence=ctx.confidence(span_days(row["first_seen"], row["last_seen"]), row["gpu_minutes"]),
                assumptions=(
                    f"Compute: {model} {spec.dense_bf16_tflops:g} TFLOPS ({spec.source}); {best.gpu_model} "
                    f"{best.tflops:g} TFLOPS ({best.tflops_source}).",
                    "Compute need = p99 of SM activity (else utilization) x compute margin x the current model's "
                    "TFLOPS; memory need = peak x memory margin.",
                    f"Savings = held GPU-hours x (price now - target price) x {HOURS_PER_MONTH:g} / window hours.",
                ),
                manifests=tuple(manifests),
            )
        )
    return out
