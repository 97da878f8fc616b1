"""Idle reclaim (kind ``idle-reclaim``): a workload whose GPUs were held with none of them active for more than
``idle_reclaim_hours`` in a row (``analysis.recommend.usage.idle_streaks``). Scaled to zero after that many idle
hours, the rest of each such run is saved: savings = those GPU-hours x price x M; the cost of every such run so far
is in the evidence."""

from __future__ import annotations

import datetime as dt

import polars as pl

from analysis.recommend.context import Context, ceil, shared_note, sources_text, window_dict, workload_checks
from analysis.recommend.context import split_by as split_by_of
from analysis.recommend.manifests import owner_of, scale_to_zero_patch
from analysis.recommend.model import Recommendation
from analysis.units import HOURS_PER_MONTH

NAME = "idle-reclaim"
TITLE = "Reclaim idle workloads"


def recommendations(ctx: Context) -> list[Recommendation]:
    """The window's ``idle-reclaim`` recommendations (see the module docstring)."""
    o = ctx.options
    threshold = o.idle_reclaim_hours * 60.0
    streaks = ctx.inputs.streaks.filter(pl.col("minutes") >= threshold)
    if streaks.height == 0:
        return []
    prices = (
        ctx.inputs.groups.filter(pl.col("workload").is_not_null() & (pl.col("gpu_hours") > 0))
        .group_by("cluster", "namespace", "workload")
        .agg(
            (pl.col("cost_usd").sum() / pl.col("gpu_hours").sum()).alias("usd"),
            pl.col("price_source").drop_nulls().unique().sort().alias("sources"),
        )
    )
    groups_of = ctx.devices.group_by("cluster", "namespace", "workload").agg(
        pl.col("node_group").drop_nulls().unique().sort().alias("node_groups")
    )
    per = (
        streaks.with_columns(
            (pl.col("observed_gpu_minutes") / pl.col("minutes")).alias("gpus"),
            (pl.col("gpu_minutes") / pl.col("minutes")).alias("gpu_share"),
        )
        .with_columns(
            ((pl.col("minutes") - threshold).clip(lower_bound=0) * pl.col("gpu_share") / 60.0).alias("reclaim_hours"),
            (pl.col("gpu_minutes") / 60.0).alias("idle_hours"),
            (pl.col("observed_gpu_minutes") / 60.0).alias("observed_hours"),
        )
        .group_by("cluster", "namespace", "workload")
        .agg(
            pl.len().alias("runs"),
            (pl.col("minutes").max() / 60.0).alias("longest_hours"),
            pl.col("idle_hours").sum(),
            pl.col("observed_hours").sum(),
            split_by_of(),
            pl.col("reclaim_hours").sum(),
            pl.col("gpus").max(),
            pl.col("end").max().alias("last_end"),
        )
        .join(prices, on=["cluster", "namespace", "workload"], how="left", nulls_equal=True)
        .join(groups_of, on=["cluster", "namespace", "workload"], how="left", nulls_equal=True)
        .sort("cluster", "namespace", "workload")
    )
    out = []
    for row in per.iter_rows(named=True):
        ns, wl = row["namespace"], row["workload"]
        if row["usd"] is None or not ctx.names_ok("idle-reclaim", workload_checks(ns, wl)):
            continue
        kind = ctx.kind(ns, wl)
        owner = ctx.owner_kind(ns, wl)
        savings = row["reclaim_hours"] * row["usd"] * ctx.month
        cost_so_far = row["idle_hours"] * row["usd"]
        idle_now = row["last_end"] is not None and row["last_end"] >= ctx.window.end - _minutes(o.bucket_minutes)
        pods = max(1, ceil(row["gpus"]))
        groups = row["node_groups"] or []
        out.append(
            Recommendation(
                kind="idle-reclaim",
                target={
                    "cluster": row["cluster"],
                    "node_group": groups[0] if len(groups) == 1 else None,
                    "namespace": ns,
                    "workload": wl,
                },
                change=(
                    f"Scale {owner_of(kind, owner)[1]} {ns}/{wl} to zero after {o.idle_reclaim_hours:g} idle hours: "
                    "it held "
                    f"{row['gpus']:.0f} GPU(s) with nothing running for up to {row['longest_hours']:.1f} hours "
                    f"in a row ({row['runs']} time(s) in the window), {cost_so_far:.2f} USD so far"
                    f"{shared_note(row['split_by'])}."
                ),
                evidence={
                    "window": window_dict(ctx.window),
                    "idle_runs_over_threshold": int(row["runs"]),
                    "longest_idle_hours": round(row["longest_hours"], 4),
                    "idle_gpu_hours": round(row["idle_hours"], 4),
                    "reclaimable_gpu_hours": round(row["reclaim_hours"], 4),
                    "cost_so_far_usd": round(cost_so_far, 2),
                    "usd_per_gpu_hour": round(row["usd"], 4),
                    "idle_now": bool(idle_now),
                    "workload_kind": kind,
                    "kind_basis": ctx.kind_basis(ns, wl),
                    **({"split_by": row["split_by"]} if row["split_by"] else {}),
                },
                savings_usd_month=savings,
                price_source=sources_text(row["sources"] or []),
                disruption={"pods_restarted": pods, "node_drain": False, "nodes_drained": 0},
                risk=(
                    "medium: the workload stops; whoever needs it again waits for a pod (and a GPU) to start"
                    if kind != "notebook"
                    else "low: the notebook server stops; its user restarts it (unsaved kernel state is lost)"
                ),
                confidence=ctx.confidence(ctx.window.hours / 24.0, row["observed_hours"] * 60.0),
                assumptions=(
                    "Idle run: consecutive minutes the workload held GPUs and none was active (state rules).",
                    f"Savings = the GPU-hours of each idle run beyond the first {o.idle_reclaim_hours:g} hours x "
                    f"its GPU-hour price x {HOURS_PER_MONTH:g} / window hours.",
                ),
                manifests=(
                    scale_to_zero_patch(
                        kind,
                        ns,
                        wl,
                        owner,
                        (
                            f"{ns}/{wl}: idle {row['longest_hours']:.1f} h in a row at most, "
                            f"{cost_so_far:.2f} USD of idle GPUs in the window. This scales it to zero now; to do "
                            f"it automatically after {o.idle_reclaim_hours:g} idle hours use an idle culler "
                            "(JupyterHub's for notebooks) or KEDA with a GPU-utilization trigger.",
                        ),
                    ),
                ),
            )
        )
    return out


def _minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)
