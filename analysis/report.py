"""The fleet report: one dict with stable keys (README "Definitions"), built from already computed pieces.

Pure: ``build`` takes the priced minute groups, histograms and the MIG and spot results and arranges them; the
reading happens in ``gpuledger.jobs``. Every dollar figure carries its price source (``fleet.price_sources``, and
per row where rows mix sources); every estimate carries its assumptions (``assumptions``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from analysis import allocation, reconcile, utilization, waste
from analysis.costs import price_sources
from analysis.pricing.freshness import stale_prices
from analysis.states import IDLE_STATES, StateRules
from analysis.window import Window


@dataclass(frozen=True)
class ReportInputs:
    window: Window
    groups: pl.DataFrame
    """Priced minute groups (``analysis.usage.minute_groups`` joined by ``analysis.costs.priced``)."""
    gpus: int
    histogram: pl.DataFrame
    heatmap: pl.DataFrame
    rules: StateRules
    top_n: int = 10
    teams: Mapping[str, Sequence[str]] = field(default_factory=dict)
    idle_mode: str = "separate"
    mig_fit: dict[str, Any] | None = None
    spot: dict[str, Any] | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)
    partly_reporting: pl.DataFrame | None = None
    now: dt.datetime | None = None
    """When the report is made: shipped price snapshots older than 90 days by then are flagged
    (``analysis.pricing.freshness``); None skips the check."""
    """Nodes with GPUs that never reported (``analysis.silent_gpus.partly_reporting``); their time is in ``groups``."""


def build(inputs: ReportInputs) -> dict[str, Any]:
    groups = inputs.groups
    states = waste.by_state(groups)
    gpu_hours = round(float(groups["gpu_hours"].sum() or 0.0), 4)
    cost = round(float(groups["cost_usd"].sum() or 0.0), 2)
    idle_hours = round(sum(states[s]["gpu_hours"] for s in IDLE_STATES), 4)
    idle_cost = round(sum(states[s]["cost_usd"] for s in IDLE_STATES), 2)
    teams = allocation.cost_by_team(groups, inputs.teams, inputs.idle_mode)
    sources = price_sources(groups)
    stale = stale_prices((str(s["price_source"]) for s in sources), inputs.now) if inputs.now is not None else []
    partly = inputs.partly_reporting
    silent_nodes = partly.drop("first_silent", "last_silent").to_dicts() if partly is not None else []
    silent = (
        sum(float(n["silent_gpu_hours"] or 0.0) for n in silent_nodes),
        sum(float(n["cost_usd"] or 0.0) for n in silent_nodes),
    )
    return {
        "window": {"start": inputs.window.start.isoformat(), "end": inputs.window.end.isoformat()},
        "fleet": {
            "gpus": inputs.gpus,
            "gpus_not_reporting": sum(n["silent_gpus"] for n in silent_nodes),
            "gpu_hours": gpu_hours,
            "cost_usd": cost,
            "price_sources": sources,
            "stale_prices": stale,
        },
        "states": {s: v["gpu_hours"] for s, v in states.items()},
        "states_cost_usd": {s: v["cost_usd"] for s, v in states.items()},
        "utilization": {
            "mean_pct": utilization.mean_pct(groups),
            "allocation_rate": utilization.allocation_rate(groups),
            "by_namespace": utilization.by(groups, "namespace", inputs.top_n, inputs.histogram),
            "by_model": utilization.by(groups, "gpu_model", inputs.top_n, inputs.histogram),
            "by_workload": utilization.by(groups, "workload", inputs.top_n),
            "by_node": utilization.by(groups, "node", inputs.top_n),
            "hour_of_week": inputs.heatmap.with_columns(pl.col(pl.Float64).round(4)).to_dicts(),
        },
        "idle_waste": {
            "gpu_hours": idle_hours,
            "cost_usd": idle_cost,
            "share_of_cost": round(idle_cost / cost, 4) if cost else None,
            "by_workload": waste.idle_leaderboard(groups, inputs.top_n),
            "by_namespace": waste.idle_by(groups, ["namespace"]).head(inputs.top_n).to_dicts(),
            "by_node": waste.idle_by(groups, ["node"]).head(inputs.top_n).to_dicts(),
            "by_model": waste.idle_by(groups, ["gpu_model"]).head(inputs.top_n).to_dicts(),
        },
        "underused": reconcile.underused(groups),
        "reconciliation": reconcile.reconciliation(groups, silent),
        "partly_reporting_nodes": silent_nodes,
        "cost_allocation": {"idle": inputs.idle_mode, "by_team": teams.to_dicts()},
        "mig_fit": inputs.mig_fit
        or {"workloads": [], "gpus_now": None, "gpus_needed": None, "savings_usd_month": None},
        "spot": inputs.spot or {"candidates": [], "savings_usd_month": None},
        "assumptions": {
            "active_threshold_pct": inputs.rules.active_threshold_pct,
            "held_memory_gib": inputs.rules.held_memory_bytes / (1 << 30),
            **inputs.assumptions,
        },
    }
