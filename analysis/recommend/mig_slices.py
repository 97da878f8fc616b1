"""MIG slices (kind ``mig``): the workloads that fit a MIG slice (``analysis.mig``), per GPU model with GPUs freed.
Change: the pod requests ``nvidia.com/mig-<profile>: 1`` instead of ``nvidia.com/gpu: 1`` (GPU Operator mixed
strategy) and the node group's GPUs are partitioned by a mig-parted config. Savings = the MIG fit's (GPUs freed x
price x 730). Claims its workloads: time-slicing and gpu-model skip them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from analysis import mig
from analysis.recommend.context import Context, ceil, group_target, window_dict, workload_checks
from analysis.recommend.manifests import GPU_OPERATOR_NAMESPACE, GPU_RESOURCE, workload_patch, yaml_text
from analysis.recommend.model import Manifest, Recommendation
from analysis.recommend.names import clean_text

NAME = "mig"
TITLE = "Move to MIG slices"


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``mig`` recommendations (see the module docstring)."""
    fit = ctx.inputs.mig_fit or {}
    workloads = [w for w in fit.get("workloads", []) if w.get("fits")]
    layouts = fit.get("layouts", [])
    catalog = mig.load_catalog()
    out = []
    for model_row in sorted(fit.get("by_model", []), key=lambda r: str(r["gpu_model"])):
        model = model_row["gpu_model"]
        if not model_row.get("gpus_freed") or not model_row.get("savings_usd_month"):
            continue
        members = sorted(
            (w for w in workloads if w["gpu_model"] == model), key=lambda w: (w["namespace"], w["workload"])
        )
        model_layouts = [lay for lay in layouts if lay["gpu_model"] == model]
        gpu = catalog.gpu(model)
        used = ctx.devices.filter(pl.col("gpu_model") == model)
        patches: list[Manifest] = []
        clusters, groups, itypes, replicas = set(), set(), set(), 0
        containers_of: dict[tuple[str, str], list[str]] = {}
        ok = True
        for w in members:
            ns, wl, profile = w["namespace"], w["workload"], w["profile"]
            rows = used.filter((pl.col("namespace") == ns) & (pl.col("workload") == wl))
            containers = sorted(set(rows["container"].drop_nulls().to_list())) or ["main"]
            clusters.update(rows["cluster"].drop_nulls().to_list())
            groups.update(rows["node_group"].drop_nulls().to_list())
            itypes.update(rows["instance_type"].drop_nulls().to_list())
            containers_of[(ns, wl)] = containers
            replicas += int(w.get("replicas") or 1)
            checks = workload_checks(ns, wl)
            checks += [("container", c, "dns-1123 label") for c in containers]
            if not ctx.names_ok("mig", checks):
                ok = False
                break
            resource = mig_resource(profile)
            kind = ctx.kind(ns, wl)
            owner = ctx.owner_kind(ns, wl)
            patches.append(
                workload_patch(
                    kind,
                    ns,
                    wl,
                    mig_pod_spec(profile, containers),
                    (
                        f"{ns}/{wl}: {GPU_RESOURCE}: 1 -> {resource}: 1 (mixed strategy). Its p95 compute "
                        f"{w['util_pct_p95']:.1f}% of a GPU x margin = {w['compute_demand']:.3f} of a GPU and peak "
                        f"memory {w['peak_mem_gib']:.1f} GiB x margin = {w['memory_demand_gib']:.1f} GiB fit "
                        f"{profile}{_history(w)}.",
                    ),
                    owner,
                )
            )
        if not ok:
            continue
        for lay in model_layouts:
            profiles = [p for p, n in sorted(lay["mig_devices"].items()) for _ in range(n)]
            if mig.arrange(gpu, profiles) is None:  # never: the packing only makes arrangeable layouts
                ctx.warnings.append(f"mig: skipped {model}: layout {lay['mig_devices']} has no valid placement")
                ok = False
        node_group = next(iter(groups)) if len(groups) == 1 else None
        cluster = next(iter(clusters)) if len(clusters) == 1 else None
        config_name = f"gpuledger-{node_group}" if node_group else "gpuledger-mig"
        if not ok or not ctx.names_ok("mig", [("mig-parted config", config_name, "label value")]):
            continue
        gpus_per_node = _gpus_per_node(ctx, node_group) or len(model_layouts)
        mig_configs = _mig_parted_configs(config_name, model_layouts, gpus_per_node)
        config_text = yaml_text({"version": "v1", "mig-configs": mig_configs})
        configmap = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gpuledger-mig-parted-config", "namespace": GPU_OPERATOR_NAMESPACE},
            "data": {"config.yaml": config_text},
        }
        needed = int(model_row["gpus_needed"])
        nodes = ceil(needed / gpus_per_node) if gpus_per_node else 1
        selector = f"karpenter.sh/nodepool={node_group}" if node_group else "<the nodes to partition>"
        cm_comments = (
            f"mig-parted config {config_name}: {needed} {model} GPU(s) partitioned as "
            + ", ".join(" + ".join(f"{n}x {p}" for p, n in sorted(lay["mig_devices"].items())) for lay in model_layouts)
            + f" (every profile exists on {gpu.model} and the layout has a valid placement: README.md, Definitions, "
            "MIG fit); "
            f"the node's other GPUs stay whole.",
            f"Use it: point the ClusterPolicy at it (spec.migManager.config.name=gpuledger-mig-parted-config, "
            f"spec.mig.strategy=mixed), then label {nodes} node(s): kubectl label nodes -l {selector} "
            f"nvidia.com/mig.config={config_name} --overwrite",
        )
        confidences = [float(w.get("confidence") or 0.0) for w in members]
        savings = float(model_row["savings_usd_month"])
        names = ", ".join(f"{w['namespace']}/{w['workload']} -> {w['profile']}" for w in members)
        out.append(
            Recommendation(
                kind="mig",
                target=group_target(cluster, node_group, members),
                change=(
                    f"Run {names} on MIG slices instead of whole {model} GPUs: "
                    f"{model_row['gpus_now']} GPUs -> {needed}, {model_row['gpus_freed']} freed."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpu_model": model,
                    "instance_type": next(iter(itypes)) if len(itypes) == 1 else None,
                    "mig_config": config_name,
                    "gpus_now": model_row["gpus_now"],
                    "gpus_needed": needed,
                    "gpus_freed": model_row["gpus_freed"],
                    "usd_per_gpu_hour": model_row["usd_per_gpu_hour"],
                    "workloads": [
                        {
                            k: w.get(k)
                            for k in (
                                "namespace",
                                "workload",
                                "profile",
                                "util_pct_p95",
                                "compute_demand",
                                "peak_mem_gib",
                                "memory_demand_gib",
                                "replicas",
                                "gpus_held",
                                "confidence",
                                "history_hours",
                                "minutes",
                            )
                        }
                        | {"containers": containers_of[(w["namespace"], w["workload"])]}
                        for w in members
                    ],
                    "layouts": [{"index": lay["index"], "mig_devices": lay["mig_devices"]} for lay in model_layouts],
                },
                savings_usd_month=savings,
                price_source=clean_text(model_row.get("price_source") or ""),
                disruption={"pods_restarted": replicas, "node_drain": True, "nodes_drained": nodes},
                risk=(
                    "medium: repartitioning needs the GPUs free (mig-manager evicts the node's GPU pods); a slice "
                    "has a fixed share of compute and memory, so a load spike beyond it slows or OOMs the pod"
                ),
                confidence=max(0.0, min(1.0, min(confidences or [0.0]) / ctx.options.confidence_days)),
                assumptions=tuple(
                    f"{k}: {v}" for k, v in sorted((fit.get("assumptions") or {}).items()) if isinstance(v, str)
                ),
                manifests=(Manifest(configmap, cm_comments), *patches),
            )
        )
        ctx.claimed.update((model, w["namespace"], w["workload"]) for w in members)
    return out


def mig_resource(profile: str) -> str:
    """The extended resource the GPU Operator's device plugin advertises for a MIG profile (mixed strategy)."""
    return f"nvidia.com/mig-{profile}"


def mig_pod_spec(profile: str, containers: Sequence[str]) -> dict[str, Any]:
    """The pod spec fields of the MIG patch: each container requests one ``profile`` instance instead of a GPU."""
    resource = mig_resource(profile)
    resources = {"limits": {GPU_RESOURCE: None, resource: 1}, "requests": {GPU_RESOURCE: None, resource: 1}}
    return {"containers": [{"name": c, "resources": resources} for c in containers]}


def _history(w: Mapping[str, Any]) -> str:
    hours = w.get("history_hours")
    return "" if hours is None else f", measured over {hours:.1f} h of history"


def _gpus_per_node(ctx: Context, node_group: str | None) -> int | None:
    """The most GPUs a node of ``node_group`` has (``analysis.gpu_count``, not the GPUs its exporter showed)."""
    if node_group is None:
        return None
    counts = ctx.facts.filter(pl.col("node_group") == node_group)["gpu_count"].drop_nulls()
    return int(counts.max()) if len(counts) else None  # type: ignore[arg-type]


def _mig_parted_configs(name: str, layouts: list[Mapping[str, Any]], gpus_per_node: int) -> dict[str, Any]:
    """mig-parted ``mig-configs``: ``all-disabled`` (kept, as the GPU Operator's default config has it) and ``name``:
    device i gets layout i, the node's remaining GPUs stay whole."""
    entries: list[dict[str, Any]] = []
    per_node = layouts[:gpus_per_node]
    for i, lay in enumerate(per_node):
        entries.append({"devices": [i], "mig-enabled": True, "mig-devices": dict(sorted(lay["mig_devices"].items()))})
    rest = list(range(len(per_node), gpus_per_node))
    if rest:
        entries.append({"devices": rest, "mig-enabled": False})
    return {"all-disabled": [{"devices": "all", "mig-enabled": False}], name: entries}
