"""Cheaper GPU models (kind ``gpu-model``): a workload (not training: multi-GPU jobs need the interconnect) whose
pods hold one GPU each moves to a cheaper model on a one-GPU instance type of the same cloud from the price catalog
only when that target (``analysis.gpu_specs``, ``analysis.instance_resources``):

- supports the precision the workload needs. Its precision is not stored, so it is assumed to need BF16 when its
  current GPU has BF16 (else FP16): a declared assumption in every recommendation;
- has the compute (p99 of ``busy_fraction`` x compute margin x the current model's dense TFLOPS at that precision,
  against the target's at the same precision) and memory (peak x memory margin);
- offers at least the vCPUs and memory per GPU the pod needs: its stored CPU and memory requests per GPU it holds
  (``cpu_request``, ``memory_request_bytes``; the most of any of the workload's pods), and, for a request not
  stored, the current instance type's vCPUs or memory per GPU (a declared fallback; ``cpu_memory_basis`` says which
  figure was used). A target with unknown CPU and memory is rejected, and so is every target when a request is not
  stored and the current instance type's CPU and memory are unknown;
- is cheaper per GPU-hour.

Every other candidate is listed in the evidence with why it was rejected. Savings = held GPU-hours x (price now -
target GPU-hour price) x M. Skips workloads MIG or time-slicing claimed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from analysis.gpu_names import gpu_model_key
from analysis.gpu_specs import GpuSpec, assumed_precision, gpu_spec
from analysis.instance_resources import InstanceResources, resources_of
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
from analysis.units import GIB, HOURS_PER_MONTH

NAME = "gpu-model"
TITLE = "Move to a cheaper GPU model"


@dataclass(frozen=True)
class _Target:
    instance_type: str
    gpu_model: str
    usd_per_gpu_hour: float
    source: str
    memory_gib: float
    spec: GpuSpec
    resources: InstanceResources | None


REQUESTED = "requested by the pod"
SHARE = "the current instance type's share"


@dataclass(frozen=True)
class _Need:
    precision: str
    tflops: float
    memory_gib: float
    floor: InstanceResources | None
    """The current instance type, whose vCPUs or memory per GPU stand in for a request that is not stored."""
    floor_gpus: int
    price_now: float
    requested: tuple[float | None, float | None] = (None, None)
    """The pod's stored (vCPUs, memory GiB) requests per GPU it holds; None where not stored."""

    @property
    def share(self) -> tuple[float, float] | None:
        return self.floor.per_gpu(self.floor_gpus) if self.floor is not None else None

    @property
    def per_gpu(self) -> tuple[float, float] | None:
        """(vCPUs, host memory GiB) per GPU the target must offer: each request where stored, else the share."""
        cpu, mem = self.requested
        if cpu is not None and mem is not None:
            return cpu, mem
        share = self.share
        if share is None:
            return None
        return (share[0] if cpu is None else cpu), (share[1] if mem is None else mem)

    @property
    def bases(self) -> tuple[str, str]:
        """Where the vCPUs and the memory figure come from: ``REQUESTED`` or ``SHARE``."""
        cpu, mem = self.requested
        return (SHARE if cpu is None else REQUESTED), (SHARE if mem is None else REQUESTED)


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
        out.append(_Target(name, e.gpu_model, price.usd_per_gpu_hour, price.source, mem, spec, resources_of(name)))
    return out


def _why_not(t: _Target, need: _Need) -> list[str]:
    """Why ``t`` cannot take the workload; empty when it can."""
    why = []
    target_tflops = t.spec.dense_tflops(need.precision)
    if target_tflops is None:
        why.append(f"no {need.precision} support ({clean_text(t.spec.support_source)})")
    elif target_tflops < need.tflops:
        why.append(f"compute {target_tflops:g} < {need.tflops:.1f} {need.precision} TFLOPS needed")
    if t.memory_gib < need.memory_gib:
        why.append(f"memory {t.memory_gib:g} < {need.memory_gib:.1f} GiB needed")
    floor = need.per_gpu
    if floor is None:
        why.append(
            "the pod's CPU or memory request is not stored and the current instance type's vCPUs and memory are "
            "unknown, so the pod's cannot be checked"
        )
    elif t.resources is None:
        why.append(f"{t.instance_type}'s vCPUs and memory are unknown")
    else:
        cpu, mem = t.resources.per_gpu(1)
        cpu_basis, mem_basis = need.bases
        if cpu < floor[0]:
            why.append(f"{cpu:g} vCPUs per GPU < {floor[0]:g} needed" + _by(cpu_basis))
        if mem < floor[1]:
            why.append(f"{mem:g} GiB of host memory per GPU < {floor[1]:g} needed" + _by(mem_basis))
    if t.usd_per_gpu_hour >= need.price_now:
        why.append(f"not cheaper: {t.usd_per_gpu_hour:.4f} >= {need.price_now:.4f} USD per GPU-hour")
    return why


def _by(basis: str) -> str:
    """What a need is named by in a rejection: nothing for the instance share (the assumption stated once), the
    request otherwise."""
    return f" ({REQUESTED})" if basis == REQUESTED else ""


def _rejected(candidates: list[_Target], best: _Target, need: _Need) -> list[dict[str, Any]]:
    out = []
    for t in candidates:
        if t is best:
            continue
        why = _why_not(t, need) or [f"fits, but {best.instance_type} is cheaper"]
        out.append({"instance_type": t.instance_type, "gpu_model": t.gpu_model, "why": "; ".join(why)})
    return out


def pod_requests(devices: pl.DataFrame) -> dict[tuple[str, str, str], tuple[float | None, float | None]]:
    """(cluster, namespace, workload) -> its pods' stored (vCPUs, memory GiB) requests per GPU each holds, the most
    of any pod, each None where no pod's is stored (device usage's ``cpu_request``, ``memory_request_bytes``)."""
    if "cpu_request" not in devices.columns or "memory_request_bytes" not in devices.columns:
        return {}
    per_pod = devices.group_by("cluster", "namespace", "workload", "pod").agg(
        (pl.col("cpu_request").cast(pl.Float64).max() / pl.col("gpu_uuid").n_unique()).alias("cpu"),
        (pl.col("memory_request_bytes").cast(pl.Float64).max() / GIB / pl.col("gpu_uuid").n_unique()).alias("mem"),
    )
    found = per_pod.group_by("cluster", "namespace", "workload").agg(pl.col("cpu").max(), pl.col("mem").max())
    return {(c, ns, wl): (cpu, mem) for c, ns, wl, cpu, mem in found.iter_rows() if cpu is not None or mem is not None}


def _need(ctx: Context, row: dict[str, Any], spec: GpuSpec, requested: tuple[float | None, float | None]) -> _Need:
    o = ctx.options
    precision = assumed_precision(spec)
    entry = catalog_entry(ctx.inputs.catalog, row["instance_type"], row["region"])
    return _Need(
        precision=precision,
        tflops=row["busy_p99"] * o.compute_margin * (spec.dense_tflops(precision) or 0.0),
        memory_gib=row["peak_gib"] * o.memory_margin,
        floor=resources_of(row["instance_type"]),
        floor_gpus=int(entry.gpu_count) if entry is not None and entry.gpu_count else 1,
        price_now=(row["cost_usd"] or 0.0) / row["gpu_hours"],
        requested=requested,
    )


def _floor_text(row: dict[str, Any], need: _Need) -> str:
    floor = need.per_gpu
    assert floor is not None
    cpu_basis, mem_basis = need.bases
    if cpu_basis == mem_basis == REQUESTED:
        return (
            f"CPU and memory: the pod's stored requests per GPU it holds (the most of any of the workload's pods): "
            f"{floor[0]:g} vCPUs, {floor[1]:g} GiB."
        )
    assert need.floor is not None
    share = need.share
    assert share is not None
    instance = (
        f"{row['instance_type']} {need.floor.vcpus:g} vCPUs, {need.floor.memory_gib:g} GiB / {need.floor_gpus} GPUs"
    )
    if cpu_basis == mem_basis == SHARE:
        return (
            f"CPU and memory: pod requests are not stored, so the pod is assumed to need the current instance "
            f"type's vCPUs and memory per GPU: {instance} = {floor[0]:g} vCPUs, {floor[1]:g} GiB "
            f"({need.floor.source})."
        )
    stored, missing = ("vCPUs", "memory") if cpu_basis == REQUESTED else ("memory", "vCPUs")
    return (
        f"CPU and memory: the pod's stored {stored} request per GPU it holds is used; its {missing} request is not "
        f"stored, so it is assumed to need the current instance type's per GPU ({instance} = {share[0]:g} vCPUs, "
        f"{share[1]:g} GiB, {need.floor.source}): {floor[0]:g} vCPUs, {floor[1]:g} GiB per GPU."
    )


def _basis(row: dict[str, Any], need: _Need) -> str:
    """The evidence's ``cpu_memory_basis``: the pod's requests, the instance share (assumed), or which is which."""
    cpu_basis, mem_basis = need.bases
    share = f"the current instance type {row['instance_type']}'s per GPU"
    if cpu_basis == mem_basis == REQUESTED:
        return "pod requests: the most of any of the workload's pods, per GPU it holds"
    if cpu_basis == mem_basis == SHARE:
        return f"assumed: pod requests are not stored; {share}"
    if cpu_basis == REQUESTED:
        return f"vCPUs: pod requests; host memory assumed: its request is not stored; {share}"
    return f"host memory: pod requests; vCPUs assumed: its request is not stored; {share}"


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``gpu-model`` recommendations (see the module docstring)."""
    o = ctx.options
    chosen = []
    requests = pod_requests(ctx.devices)
    for row in ctx.single.iter_rows(named=True):
        ns, wl, model = row["namespace"], row["workload"], row["gpu_model"]
        if (model, ns, wl) in ctx.claimed or ctx.kind(ns, wl) in ("training",):
            continue
        spec = gpu_spec(model)
        if spec is None or row["busy_p99"] is None or row["peak_gib"] is None or not row["gpu_hours"]:
            continue
        need = _need(ctx, row, spec, requests.get((row["cluster"], ns, wl), (None, None)))
        candidates = [
            t
            for t in _targets(ctx, row["instance_type"], row["capacity_type"], row["region"])
            if gpu_model_key(t.gpu_model) != gpu_model_key(model)
        ]
        fits = [t for t in candidates if not _why_not(t, need)]
        if not fits:
            continue
        best = min(fits, key=lambda t: (t.usd_per_gpu_hour, t.instance_type))
        chosen.append((row, best, need, spec, _rejected(candidates, best, need)))
    out = []
    pool_gpus: dict[tuple[str, str, str], int] = {}
    for row, best, *_ in chosen:
        key = (row["cluster"], best.instance_type, row["capacity_type"] or ON_DEMAND)
        pool_gpus[key] = pool_gpus.get(key, 0) + int(row["gpus"])
    for row, best, need, spec, rejected in chosen:
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
        p = need.precision
        now_tflops = spec.dense_tflops(p) or 0.0
        target_tflops = best.spec.dense_tflops(p) or 0.0
        assert best.resources is not None and need.per_gpu is not None
        if aws:
            limit = node_multiple(best.instance_type, pool_gpus[(row["cluster"], best.instance_type, capacity)])
            manifests.append(
                Manifest(
                    nodepool(
                        pool,
                        requirements=[
                            requirement("karpenter.k8s.aws/instance-family", best.instance_type.split(".")[0]),
                            requirement("karpenter.k8s.aws/instance-gpu-name", best.spec.karpenter_gpu_name),
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
                f"{ns}/{wl}: {model} -> {best.gpu_model}: needs {need.tflops:.0f} {p} TFLOPS (p99 "
                f"{row['busy_p99']:.2f} of {now_tflops:g} x {o.compute_margin:g}) of {target_tflops:g}, "
                f"{need.memory_gib:.1f} GiB of {best.memory_gib:g} GiB, {need.per_gpu[0]:g} vCPUs and "
                f"{need.per_gpu[1]:g} GiB of host memory per GPU of {best.resources.vcpus:g} and "
                f"{best.resources.memory_gib:g}. Remove any other node selector that pins its old node group.",
                ctx.owner_kind(ns, wl),
            )
        )
        savings = row["gpu_hours"] * (need.price_now - best.usd_per_gpu_hour) * ctx.month
        out.append(
            Recommendation(
                kind="gpu-model",
                target={"cluster": row["cluster"], "node_group": row["node_group"], "namespace": ns, "workload": wl},
                change=(
                    f"Move {ns}/{wl} from {model} ({row['instance_type']}) to {best.gpu_model} "
                    f"({best.instance_type}): its compute{shared_note(row['split_by'])}, {p} precision (assumed), "
                    f"memory, vCPUs and host memory per GPU fit, at {best.usd_per_gpu_hour:.2f} instead of "
                    f"{need.price_now:.2f} USD per GPU-hour."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpu_model": model,
                    "instance_type": row["instance_type"],
                    "target_gpu_model": best.gpu_model,
                    "target_instance_type": best.instance_type,
                    "precision": p,
                    "workload_kind": kind,
                    "kind_basis": ctx.kind_basis(ns, wl),
                    "precision_basis": f"assumed: the workload's precision is unknown; {p} "
                    + ("because its current GPU supports bf16" if p == "bf16" else "(its current GPU has no bf16)"),
                    "busy_p99": round(row["busy_p99"], 4),
                    "compute_need_tflops": round(need.tflops, 1),
                    "target_tflops": target_tflops,
                    "peak_mem_gib": round(row["peak_gib"], 2),
                    "memory_need_gib": round(need.memory_gib, 2),
                    "target_memory_gib": best.memory_gib,
                    "vcpus_per_gpu_need": round(need.per_gpu[0], 2),
                    "host_memory_gib_per_gpu_need": round(need.per_gpu[1], 2),
                    "cpu_memory_basis": _basis(row, need),
                    "target_vcpus": best.resources.vcpus,
                    "target_host_memory_gib": best.resources.memory_gib,
                    "gpu_hours": round(row["gpu_hours"], 4),
                    "usd_per_gpu_hour_now": round(need.price_now, 4),
                    "usd_per_gpu_hour_target": round(best.usd_per_gpu_hour, 4),
                    "gpus_held": int(row["gpus"]),
                    "rejected_targets": rejected,
                    **({"split_by": row["split_by"]} if row["split_by"] else {}),
                },
                savings_usd_month=savings,
                price_source=sources_text([*row["sources"], f"target: {best.source}"]),
                disruption={"pods_restarted": int(row["gpus"]), "node_drain": False, "nodes_drained": 0},
                risk=(
                    "medium: peak TFLOPS is a proxy; memory bandwidth and interconnect differ between models, the "
                    "precision is assumed, and "
                    + (
                        "CPU and memory are checked against the pod's stored requests"
                        if need.bases == (REQUESTED, REQUESTED)
                        else "CPU or memory is checked against the current instance type's share per GPU where the "
                        "pod's request is not stored"
                    )
                ),
                confidence=ctx.confidence(span_days(row["first_seen"], row["last_seen"]), row["gpu_minutes"]),
                assumptions=(
                    f"Precision: the workload's is unknown; it is assumed to need {p}"
                    + (f", which {model} supports" if p == "bf16" else f" ({model} has no bf16)")
                    + f", so only GPUs with {p} Tensor Cores are targets ({clean_text(spec.support_source)}).",
                    f"Compute: {model} {now_tflops:g} dense {p} TFLOPS ({clean_text(spec.tflops_source)}); "
                    f"{best.gpu_model} {target_tflops:g} ({clean_text(best.spec.tflops_source)}).",
                    "Compute need = p99 of SM activity (else utilization) x compute margin x the current model's "
                    "TFLOPS; memory need = peak x memory margin.",
                    _floor_text(row, need)
                    + f" {best.instance_type}: {best.resources.vcpus:g} vCPUs, {best.resources.memory_gib:g} GiB "
                    f"({best.resources.source}).",
                    f"Savings = held GPU-hours x (price now - target price) x {HOURS_PER_MONTH:g} / window hours.",
                ),
                manifests=tuple(manifests),
            )
        )
    return out
