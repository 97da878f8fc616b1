"""Underused GPU-time, and a reconciliation of gpuledger's states with OpenCost's and Kubecost's GPU figures.

Definitions (README, Definitions, "Underused" and "Reconciliation"; pinned by ``tests/test_reconcile.py``):

- **Underused** = active GPU-time x (1 - utilization), minute by minute (utilization as the states read it: DCGM's
  ``sm_active`` where present, else ``util_pct``), priced at the minute's GPU-hour price: an active minute at 6% is
  0.94 of a GPU-minute underused. On the minute groups that is ``gpu_hours - busy_weighted / 100`` per active group.
- **OpenCost's GPU cost** = GPU requests x hours x price: the GPU-time pods held, priced. OpenCost charges what a pod
  requests whether it is used or not, so idle held time is in it; GPU-time no pod held (nobody, or GPU processes
  outside pods) is its cluster idle, charged to no workload; per namespace, a time-sliced GPU is charged by request
  (each holder 1/holders of the minute, ``request_hours``).
- **Kubecost's workload idle** = (request - usage) x price: pod-held GPU-time x (1 - utilization). Kubecost records
  no GPU allocation for pods of a shared GPU (they request ``nvidia.com/gpu.shared``), so shared GPU-time counts $0.

The reconciliation walks from each of them to gpuledger's figures in named, quantified steps that add up:
OpenCost's allocated cost + unallocated time + no data = the fleet cost; Kubecost's workload idle + use below the
active threshold on idle pod minutes + shared GPUs + unallocated time = idle waste + underused.

Pure: frames in (the priced minute groups of ``analysis.usage`` and ``analysis.costs``), dicts out.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from analysis.states import IDLE_STATES
from warehouse.rollup import OUTSIDE_PODS

UNDERUSED_DEFINITION = (
    "Underused = active GPU-time x (1 - utilization), per minute (DCGM SM activity where present, else GPU_UTIL), "
    "priced at that minute's GPU-hour price: an active minute at 6% is 0.94 of a GPU-minute underused."
)
COST_DEFINITION = (
    "OpenCost's GPU cost = GPU requests x hours x price: the GPU-time pods held (active or idle), priced; GPU-time no "
    "pod held is OpenCost's cluster idle, charged to no workload; no_data is time nobody observed."
)
IDLE_DEFINITION = (
    "Kubecost's workload idle = (request - usage) x price = pod-held GPU-time x (1 - utilization); pods on a shared "
    "GPU have no GPU allocation in Kubecost, so their idle shows as $0."
)
TOLERANCE_USD = 1e-6


def _parts(groups: pl.DataFrame) -> pl.DataFrame:
    """``groups`` with, per row: its price (0 when unpriced), ``used`` GPU-hours (utilization x GPU-time), who held
    it (``holder``: pod, outside, nobody, no_data), whether it was shared, and gpuledger's idle-or-underused hours."""
    names = groups.columns
    gpu_hours = pl.col("gpu_hours").fill_null(0.0)
    busy = pl.col("busy_weighted").fill_null(0.0) if "busy_weighted" in names else pl.lit(0.0)
    used = pl.min_horizontal(pl.max_horizontal(busy / 100.0, pl.lit(0.0)), gpu_hours)
    request = pl.col("request_hours").fill_null(gpu_hours) if "request_hours" in names else gpu_hours
    shared = pl.col("split_method").is_not_null() if "split_method" in names else pl.lit(False)
    state = pl.col("state")
    namespace = pl.col("namespace")
    holder = (
        pl.when(state == "no_data")
        .then(pl.lit("no_data"))
        .when(namespace.is_null())
        .then(pl.lit("nobody"))
        .when(namespace == OUTSIDE_PODS)
        .then(pl.lit("outside"))
        .otherwise(pl.lit("pod"))
    )
    return (
        groups.with_columns(
            pl.col("usd_per_gpu_hour").fill_null(0.0).alias("_price"),
            gpu_hours.alias("_hours"),
            used.alias("_used"),
            request.alias("_request"),
            shared.alias("_shared"),
            holder.alias("_holder"),
        )
        .with_columns((pl.col("_hours") - pl.col("_used")).alias("_unused"))
        .with_columns(
            pl.when(state.is_in(IDLE_STATES))
            .then(pl.col("_hours"))
            .when(state == "active")
            .then(pl.col("_unused"))
            .otherwise(0.0)
            .alias("_gl_idle"),
            pl.when(state == "active").then(pl.col("_unused")).otherwise(0.0).alias("_underused"),
        )
    )


def _sum(frame: pl.DataFrame, hours: str, where: pl.Expr | None = None) -> tuple[float, float]:
    """GPU-hours in column ``hours`` and their dollars (x each row's price), over the rows ``where`` selects."""
    rows = frame if where is None else frame.filter(where)
    got = rows.select(pl.col(hours).sum().alias("h"), (pl.col(hours) * pl.col("_price")).sum().alias("c")).row(0)
    return float(got[0] or 0.0), float(got[1] or 0.0)


def underused(groups: pl.DataFrame) -> dict[str, Any]:
    """Underused GPU-hours and dollars in ``groups`` (priced minute groups), their share of active GPU-time, the
    definition, and the price sources that priced them."""
    parts = _parts(groups)
    hours, cost = _sum(parts, "_underused")
    active, _ = _sum(parts, "_hours", pl.col("state") == "active")
    sources = (
        parts.filter(pl.col("_underused") > 0)
        .group_by("price_source", "price_fallback")
        .agg(
            pl.col("_underused").sum().round(4).alias("gpu_hours"),
            (pl.col("_underused") * pl.col("_price")).sum().round(2).alias("cost_usd"),
        )
        .sort("cost_usd", "price_source", descending=[True, False])
        .to_dicts()
    )
    return {
        "gpu_hours": round(hours, 4),
        "cost_usd": round(cost, 2),
        "share_of_active": round(hours / active, 4) if active else None,
        "definition": UNDERUSED_DEFINITION,
        "price_sources": sources,
    }


def _line(kind: str, line: str, hours: float, cost: float, why: str = "") -> dict[str, Any]:
    return {"kind": kind, "line": line, "gpu_hours": round(hours, 4), "cost_usd": round(cost, 2), "why": why}


def reconciliation(groups: pl.DataFrame, silent: tuple[float, float] = (0.0, 0.0)) -> dict[str, Any]:
    """The reconciliation of ``groups`` (priced minute groups, silent GPUs' no_data included) in three parts:
    ``cost`` (OpenCost's allocated GPU cost to the fleet cost), ``idle`` (Kubecost's workload idle to gpuledger's
    idle waste + underused) and ``by_namespace``; each line has a ``kind``: ``start``, ``plus`` (a named difference),
    ``equals``, ``of which`` (a part of the line above) or ``moved`` (shifts between namespaces, totals unchanged).
    ``silent``: the GPU-hours and dollars of GPUs that never reported (``analysis.silent_gpus``), part of no_data."""
    parts = _parts(groups)
    holder, state, shared = pl.col("_holder"), pl.col("state"), pl.col("_shared")
    pod = holder == "pod"
    unheld = holder.is_in(["nobody", "outside"])
    fleet = _sum(parts, "_hours")
    pods = _sum(parts, "_hours", pod)
    pod_active = _sum(parts, "_hours", pod & (state == "active"))
    pod_idle = _sum(parts, "_hours", pod & state.is_in(IDLE_STATES))
    nobody = _sum(parts, "_hours", holder == "nobody")
    outside = _sum(parts, "_hours", holder == "outside")
    no_data = _sum(parts, "_hours", holder == "no_data")
    unallocated = (nobody[0] + outside[0], nobody[1] + outside[1])
    shared_time = _sum(parts, "_hours", pod & shared)

    by_namespace = _by_namespace(parts.filter(pod))
    differences = (
        parts.filter(pod)
        .group_by("namespace")
        .agg(((pl.col("_hours") - pl.col("_request")) * pl.col("_price")).sum().abs().alias("moved"))
    )
    moved = 0.5 * float(differences["moved"].sum() or 0.0)
    cost_lines = [
        _line("start", "OpenCost: GPU cost allocated to pods (GPU requests x hours x price)", *pods),
        _line("of which", "active (gpuledger: used + underused)", *pod_active),
        _line(
            "of which",
            "idle held: pods held the GPU below the active threshold",
            *pod_idle,
            "OpenCost charges it to the workload; gpuledger calls it idle waste (idle_held + idle_allocated)",
        ),
        _line(
            "plus",
            "unallocated time: no pod held the GPU",
            *unallocated,
            "OpenCost's cluster idle, charged to no workload",
        ),
        _line("of which", "nobody held it", *nobody),
        _line("of which", "GPU processes outside pods", *outside, "a holder in gpuledger, no request in OpenCost"),
        _line("plus", "no data: nobody observed the GPU", *no_data, "paid for; neither tool knows what it did"),
        _line("of which", "GPUs that never reported", *silent, "the node's GPU count less the GPUs reporting"),
        _line("equals", "gpuledger: fleet cost", *fleet),
        _line(
            "moved",
            "shared GPUs: charged by request in OpenCost, by measured use in gpuledger",
            shared_time[0],
            moved,
            "dollars that change namespace; the total is unchanged",
        ),
    ]

    kubecost = _sum(parts, "_unused", pod & ~shared)
    below = _sum(parts, "_used", pod & ~shared & state.is_in(IDLE_STATES))
    shared_idle = _sum(parts, "_gl_idle", pod & shared)
    unallocated_idle = _sum(parts, "_gl_idle", unheld)
    gpuledger = _sum(parts, "_gl_idle")
    idle_waste = _sum(parts, "_hours", state.is_in(IDLE_STATES))
    under = _sum(parts, "_underused")
    idle_lines = [
        _line("start", "Kubecost: workload idle ((request - usage) x price), shared GPUs at $0", *kubecost),
        _line(
            "plus",
            "use below the active threshold on idle pod minutes",
            *below,
            "Kubecost counts it used; gpuledger counts the whole minute idle",
        ),
        _line(
            "plus",
            "shared GPUs",
            *shared_idle,
            "Kubecost shows $0; gpuledger splits them by measured use",
        ),
        _line(
            "plus",
            "unallocated time: no pod held the GPU",
            *unallocated_idle,
            "Kubecost's cluster idle, not workload idle",
        ),
        _line("equals", "gpuledger: idle waste + underused", *gpuledger),
        _line("of which", "idle waste (idle_held + idle_allocated + unallocated)", *idle_waste),
        _line("of which", "underused (active GPU-time x (1 - utilization))", *under),
    ]
    cost_gap = pods[1] + unallocated[1] + no_data[1] - fleet[1]
    idle_gap = kubecost[1] + below[1] + shared_idle[1] + unallocated_idle[1] - gpuledger[1]
    return {
        "cost": {
            "definition": COST_DEFINITION,
            "lines": cost_lines,
            "adds_up": abs(cost_gap) <= TOLERANCE_USD * max(1.0, abs(fleet[1])),
        },
        "idle": {
            "definition": IDLE_DEFINITION,
            "lines": idle_lines,
            "adds_up": abs(idle_gap) <= TOLERANCE_USD * max(1.0, abs(gpuledger[1])),
        },
        "by_namespace": by_namespace,
        "prices": "every line is priced at each minute's GPU-hour price, the fleet's (fleet.price_sources)",
    }


def _by_namespace(pod_rows: pl.DataFrame) -> list[dict[str, Any]]:
    """Per namespace whose pods held GPUs: OpenCost's cost (by request), gpuledger's (by measured use), the shared
    GPU difference between them, Kubecost's workload idle and gpuledger's idle waste + underused."""
    price = pl.col("_price")
    return (
        pod_rows.group_by("namespace")
        .agg(
            pl.col("_hours").sum().round(4).alias("gpu_hours"),
            (pl.col("_request") * price).sum().alias("opencost_usd"),
            (pl.col("_hours") * price).sum().alias("gpuledger_usd"),
            (pl.col("_unused") * price).filter(~pl.col("_shared")).sum().alias("kubecost_idle_usd"),
            (pl.col("_gl_idle") * price).sum().alias("gpuledger_idle_usd"),
            (pl.col("_underused") * price).sum().alias("underused_usd"),
            pl.col("split_method").drop_nulls().unique().sort().str.join(", ").alias("split_by")
            if "split_method" in pod_rows.columns
            else pl.lit("").alias("split_by"),
        )
        .with_columns((pl.col("gpuledger_usd") - pl.col("opencost_usd")).alias("shared_difference_usd"))
        .with_columns(pl.col(pl.Float64).exclude("gpu_hours").round(2))
        .sort(["gpuledger_usd", "namespace"], descending=[True, False])
        .to_dicts()
    )
