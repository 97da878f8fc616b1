"""Right-sized GPU counts (kind ``gpu-count``): a pod holding several GPUs of which some never worked (active in
less than 1% of the minutes it held them) while another did. Change: request the GPUs it used. Savings = spare
GPU-hours x their GPU-hour price x M."""

from __future__ import annotations

import polars as pl

from analysis.recommend.context import Context, shared_note, sources_text, span_days, window_dict, workload_checks
from analysis.recommend.context import split_by as split_by_of
from analysis.recommend.manifests import GPU_RESOURCE, owner_of, workload_patch
from analysis.recommend.model import Recommendation
from analysis.units import HOURS_PER_MONTH

NAME = "gpu-count"
TITLE = "Right-size GPU count"

SPARE_ACTIVE_SHARE = 0.01
"""A GPU a pod held is spare when it was active in less than this share of the minutes the pod held it."""


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``gpu-count`` recommendations (see the module docstring)."""
    d = ctx.devices.with_columns((pl.col("active_minutes") < SPARE_ACTIVE_SHARE * pl.col("minutes")).alias("spare"))
    pod_keys = ["cluster", "namespace", "workload", "pod", "container"]
    pods = (
        d.group_by(pod_keys)
        .agg(
            pl.len().alias("gpus"),
            (~pl.col("spare")).sum().alias("used"),
            pl.col("minutes").filter(pl.col("spare")).sum().alias("spare_minutes"),
            pl.col("cost_usd").filter(pl.col("spare")).sum().alias("spare_cost_usd"),
            pl.col("price_source").filter(pl.col("spare")).drop_nulls().unique().alias("sources"),
            split_by_of(),
            pl.col("node_group").drop_nulls().first().alias("node_group"),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("observed_minutes").sum().alias("gpu_minutes"),
        )
        .filter((pl.col("gpus") >= 2) & (pl.col("used") >= 1) & (pl.col("used") < pl.col("gpus")))
    )
    out = []
    keys = ["cluster", "namespace", "workload", "container"]
    per_workload = (
        pods.group_by(keys)
        .agg(
            pl.col("gpus").max(),
            pl.col("used").max(),
            pl.len().alias("pods"),
            pl.col("spare_minutes").sum(),
            pl.col("spare_cost_usd").sum(),
            pl.col("sources").explode().drop_nulls().unique().sort(),
            split_by_of(),
            pl.col("node_group").drop_nulls().first(),
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("gpu_minutes").sum(),
        )
        .sort(keys)
    )
    for row in per_workload.iter_rows(named=True):
        ns, wl, container = row["namespace"], row["workload"], row["container"]
        if not ctx.names_ok("gpu-count", workload_checks(ns, wl, container)):
            continue
        kind = ctx.kind(ns, wl)
        savings = row["spare_cost_usd"] * ctx.month
        gpus, used = int(row["gpus"]), int(row["used"])
        resources = {"limits": {GPU_RESOURCE: used}, "requests": {GPU_RESOURCE: used}}
        owner = ctx.owner_kind(ns, wl)
        spare_hours = row["spare_minutes"] / 60.0
        comments = (
            f"{ns}/{wl}: {GPU_RESOURCE} {gpus} -> {used}: {gpus - used} of its {gpus} GPUs were active in less than "
            f"{SPARE_ACTIVE_SHARE:.0%} of the minutes held ({spare_hours:.1f} spare GPU-hours in the window"
            f"{shared_note(row['split_by'])}).",
        )
        patch = workload_patch(
            kind, ns, wl, {"containers": [{"name": container, "resources": resources}]}, comments, owner
        )
        out.append(
            Recommendation(
                kind="gpu-count",
                target={"cluster": row["cluster"], "node_group": row["node_group"], "namespace": ns, "workload": wl},
                change=(
                    f"Request {used} GPU{'s' if used != 1 else ''} instead of {gpus} for container {container} of "
                    f"{owner_of(kind, owner)[1]} {ns}/{wl}: {gpus - used} of its {gpus} GPUs did no work."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "gpus_requested": gpus,
                    "gpus_used": used,
                    "pods": int(row["pods"]),
                    "spare_gpu_hours": round(spare_hours, 4),
                    "spare_cost_usd": round(row["spare_cost_usd"], 2),
                    "gpu_minutes_observed": int(row["gpu_minutes"]),
                    "workload_kind": kind,
                    "kind_basis": ctx.kind_basis(ns, wl),
                    **({"split_by": row["split_by"]} if row["split_by"] else {}),
                },
                savings_usd_month=savings,
                price_source=sources_text(row["sources"]),
                disruption={"pods_restarted": int(row["pods"]), "node_drain": False, "nodes_drained": 0},
                risk=(
                    "medium: the job must run with fewer ranks (world size, batch size or sharding may need to "
                    "change); a GPU kept idle on purpose (e.g. for a later phase) would be lost"
                ),
                confidence=ctx.confidence(span_days(row["first_seen"], row["last_seen"]), row["gpu_minutes"]),
                assumptions=(
                    f"Spare GPU: active (state rules) in less than {SPARE_ACTIVE_SHARE:.0%} of the minutes the pod "
                    "held it.",
                    f"Monthly = spare GPU-hours in the window x their GPU-hour price x {HOURS_PER_MONTH:g} / window "
                    "hours: the window's runs are taken as typical.",
                ),
                manifests=(patch,),
            )
        )
    return out
