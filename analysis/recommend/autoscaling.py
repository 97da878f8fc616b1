"""Autoscaling (kind ``autoscaling``): per node group, held (allocated) GPUs per ``bucket_minutes`` bucket. Min nodes
= ceil(the ``autoscaling_min_percentile`` of demand / GPUs per node), max nodes = ceil(the
``autoscaling_max_percentile`` x ``autoscaling_headroom`` / GPUs per node). With perfect packing the pool would run
max(min nodes, ceil(demand / GPUs per node)) nodes in each bucket: savings = (node-hours observed - that) x GPUs per
node x price x M. GPUs per node: the most of the group's node GPU counts by the one rule (``analysis.gpu_count``:
instance type, else GFD label, else GPUs seen; ``gpu_count_basis`` in the evidence), so a node whose exporter shows
only some of its GPUs still counts all of them. Exported as a Karpenter ``NodePool`` (AWS instance types) and
cluster-autoscaler settings."""

from __future__ import annotations

import polars as pl

from analysis.gpu_specs import gpu_spec
from analysis.pricing import ON_DEMAND
from analysis.recommend.context import Context, ceil, is_aws, sources_text, span_days, window_dict
from analysis.recommend.manifests import GPU_RESOURCE, JOB_KINDS, nodepool, requirement
from analysis.recommend.model import Manifest, Recommendation
from analysis.units import HOURS_PER_MONTH

NAME = "autoscaling"
TITLE = "Autoscaling (Karpenter and cluster-autoscaler)"


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``autoscaling`` recommendations (see the module docstring)."""
    o = ctx.options
    demand = ctx.inputs.demand.join(ctx.facts, on=["cluster", "node"], how="left").filter(
        pl.col("node_group").is_not_null()
    )
    if demand.height == 0:
        return []
    bucket_h = o.bucket_minutes / 60.0
    per_bucket = (
        demand.group_by("cluster", "node_group", "bucket")
        .agg(pl.col("held_gpus").sum(), pl.col("node").n_unique().alias("nodes"))
        .sort("cluster", "node_group", "bucket")
    )
    groups_kind = ctx.inputs.groups
    out = []
    for (cluster, node_group), rows in sorted(
        per_bucket.group_by("cluster", "node_group"), key=lambda g: (str(g[0][0]), str(g[0][1]))
    ):
        facts = ctx.facts.filter((pl.col("cluster") == cluster) & (pl.col("node_group") == node_group))
        g = int(facts["gpu_count"].max() or 0)  # type: ignore[arg-type]
        if g <= 0:
            continue
        itype, capacity, region = (_most_common(facts[c]) for c in ("instance_type", "capacity_type", "region"))
        basis = _most_common(facts.filter(pl.col("gpu_count") == g)["gpu_count_basis"])
        held = rows["held_gpus"]
        p_min = float(held.quantile(o.autoscaling_min_percentile, "higher") or 0.0)
        p_max = float(held.quantile(o.autoscaling_max_percentile, "higher") or 0.0)
        min_nodes = ceil(p_min / g)
        max_nodes = max(min_nodes, ceil(p_max * o.autoscaling_headroom / g), 1)
        expected = [max(min_nodes, ceil(h / g)) for h in held.to_list()]
        node_hours_now = float(rows["nodes"].sum()) * bucket_h
        node_hours_auto = float(sum(expected)) * bucket_h
        saved_node_hours = node_hours_now - node_hours_auto
        node_names = facts["node"].to_list()
        price_rows = ctx.prices.filter((pl.col("cluster") == cluster) & pl.col("node").is_in(node_names))
        if price_rows.height == 0:
            continue
        usd = float(price_rows["usd_per_gpu_hour"].mean())  # type: ignore[arg-type]
        savings = saved_node_hours * g * usd * ctx.month
        if savings < 0.005:
            continue
        ca_name = f"gpuledger-cluster-autoscaler-{node_group}"
        if not ctx.names_ok(
            "autoscaling",
            [
                ("node group", node_group, "label value"),
                ("node group", node_group, "dns-1123 subdomain"),
                ("configmap", ca_name, "dns-1123 subdomain"),
            ],
        ):
            continue
        in_group = groups_kind.filter(
            (pl.col("cluster") == cluster) & pl.col("node").is_in(node_names) & pl.col("workload").is_not_null()
        )
        job_hours = sum(
            h
            for ns, wl, h in in_group.group_by("namespace", "workload").agg(pl.col("gpu_hours").sum()).iter_rows()
            if ctx.kind(ns, wl) in JOB_KINDS
        )
        jobs = job_hours * 2 > float(in_group["gpu_hours"].sum() or 0.0)
        mean_nodes_now = node_hours_now / (rows.height * bucket_h)
        mean_nodes_auto = node_hours_auto / (rows.height * bucket_h)
        nodes_drained = max(0, ceil(mean_nodes_now - mean_nodes_auto))
        threshold = round(0.5 / g, 3) if jobs else 0.5
        unneeded = "20m" if jobs else "10m"
        manifests = []
        spec = gpu_spec(_model_of(ctx, node_names))
        aws = is_aws(ctx.inputs.catalog, itype, region)
        reasons_np = [
            f"Node group {node_group}: {g} GPUs per node ({itype}); held GPUs per {o.bucket_minutes}-minute bucket: "
            f"p{o.autoscaling_min_percentile * 100:g} {p_min:.2f}, p{o.autoscaling_max_percentile * 100:g} "
            f"{p_max:.2f}.",
            f"limits {GPU_RESOURCE} {max_nodes * g} = max nodes {max_nodes} x {g}: ceil(p"
            f"{o.autoscaling_max_percentile * 100:g} {p_max:.2f} x headroom {o.autoscaling_headroom:g} / {g}).",
        ]
        if jobs:
            reasons_np.append(
                "Consolidation WhenEmpty, expireAfter Never, no replacement of drifted nodes: the pool mostly runs "
                "jobs, which only lose work when evicted; empty nodes go after 10 minutes."
            )
        else:
            reasons_np.append(
                "Consolidation WhenEmptyOrUnderutilized, one node at a time: the pool mostly serves, and "
                "replicas on the other nodes keep serving while one is replaced."
            )
        if aws and spec is not None and itype:
            manifests.append(
                Manifest(
                    nodepool(
                        node_group,
                        requirements=[
                            requirement("karpenter.k8s.aws/instance-family", itype.split(".")[0]),
                            requirement("karpenter.k8s.aws/instance-gpu-name", spec.karpenter_gpu_name),
                            requirement("karpenter.sh/capacity-type", capacity or ON_DEMAND),
                        ],
                        gpu_limit=max_nodes * g,
                        node_class=o.karpenter_node_class,
                        consolidation="WhenEmpty" if jobs else "WhenEmptyOrUnderutilized",
                        consolidate_after="10m",
                        budgets=(
                            [{"nodes": "0", "reasons": ["Drifted"]}, {"nodes": "10%"}] if jobs else [{"nodes": "1"}]
                        ),
                        expire_after="Never" if jobs else "720h",
                    ),
                    tuple(reasons_np),
                )
            )
        flags = {
            "nodes": f"{min_nodes}:{max_nodes}:{node_group}",
            "scale-down-gpu-utilization-threshold": f"{threshold:g}",
            "scale-down-unneeded-time": unneeded,
            "scale-down-delay-after-add": "10m",
            "expander": "least-waste",
        }
        ca = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ca_name, "namespace": "kube-system"},
            "data": {**flags, "flags": " ".join(f"--{k}={v}" for k, v in flags.items())},
        }
        ca_reasons = (
            f"cluster-autoscaler settings for node group {node_group} (clusters without Karpenter): copy 'flags' into "
            "the cluster-autoscaler container's command (node group: your ASG or MIG name).",
            f"--nodes={min_nodes}:{max_nodes}: min = ceil(p{o.autoscaling_min_percentile * 100:g} of held GPUs "
            f"{p_min:.2f} / {g}), max = ceil(p{o.autoscaling_max_percentile * 100:g} {p_max:.2f} x "
            f"{o.autoscaling_headroom:g} / {g}).",
            f"--scale-down-gpu-utilization-threshold={threshold:g}: "
            + (
                f"below 1/{g} requested GPUs, so only a node with no GPU requested is removed: running jobs are "
                "never evicted to consolidate."
                if jobs
                else "cluster-autoscaler's default: a node at most half requested is drained, its replicas "
                "rescheduled on the others."
            ),
            f"--scale-down-unneeded-time={unneeded}: "
            + (
                "twice the default: the next job often lands minutes after the last ends, and a new GPU node costs "
                "its boot, driver and image pull."
                if jobs
                else "the default: serving demand moves over hours (daily cycle), so 10 empty minutes is no flapping "
                "risk."
            ),
            "--scale-down-delay-after-add=10m: GPU nodes take minutes to boot and pull images; capacity added for "
            "pending pods is kept until they start. --expander=least-waste: the group that leaves the fewest idle "
            "GPUs after scale-up.",
        )
        manifests.append(Manifest(ca, ca_reasons))
        first, last = rows["bucket"].min(), rows["bucket"].max()
        out.append(
            Recommendation(
                kind="autoscaling",
                target={"cluster": cluster, "node_group": node_group, "namespace": None, "workload": None},
                change=(
                    f"Autoscale node group {node_group} between {min_nodes} and {max_nodes} nodes on allocated-GPU "
                    f"demand (today {mean_nodes_now:.1f} nodes on average, {mean_nodes_auto:.1f} needed)."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "instance_type": itype,
                    "gpus_per_node": g,
                    "gpu_count_basis": basis,
                    "bucket_minutes": o.bucket_minutes,
                    "buckets": rows.height,
                    "held_gpus_min_percentile": round(p_min, 4),
                    "held_gpus_max_percentile": round(p_max, 4),
                    "held_gpus_mean": round(float(held.mean() or 0.0), 4),  # type: ignore[arg-type]
                    "min_nodes": min_nodes,
                    "max_nodes": max_nodes,
                    "node_hours_observed": round(node_hours_now, 4),
                    "node_hours_autoscaled": round(node_hours_auto, 4),
                    "usd_per_gpu_hour": round(usd, 4),
                    "mostly_jobs": jobs,
                },
                savings_usd_month=savings,
                price_source=sources_text(price_rows["price_source"].to_list()),
                disruption={"pods_restarted": 0, "node_drain": True, "nodes_drained": nodes_drained},
                risk=(
                    "low: only empty nodes are removed; a burst above max waits for capacity"
                    if jobs
                    else "medium: consolidation reschedules replicas; a scale-up takes minutes (node boot, image "
                    "pull), so bursts queue until capacity arrives"
                ),
                confidence=ctx.confidence(span_days(first, last), float(rows["held_gpus"].sum()) * o.bucket_minutes),
                assumptions=(
                    f"Demand = GPUs held (active, idle_held, idle_allocated) per {o.bucket_minutes}-minute bucket.",
                    "Autoscaled node-hours assume perfect packing (ceil(demand / GPUs per node) nodes) and no "
                    "scale-up or scale-down delay: a lower bound on the cost, so the savings are an upper bound.",
                    f"Savings = (observed - autoscaled node-hours) x GPUs per node x mean GPU-hour price x "
                    f"{HOURS_PER_MONTH:g} / window hours.",
                ),
                manifests=tuple(manifests),
            )
        )
    return out


def _most_common(values: pl.Series) -> str | None:
    """The most common non-null value (the first in sort order on a tie), or None."""
    present = values.drop_nulls().cast(pl.String)
    return str(present.mode().sort()[0]) if len(present) else None


def _model_of(ctx: Context, node_names: list[str]) -> str | None:
    models = ctx.inputs.nodes.filter(pl.col("node").is_in(node_names))["gpu_model"].drop_nulls()
    return str(models.mode().sort().first()) if len(models) else None
