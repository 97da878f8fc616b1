"""The fleet report: one dict with stable keys (README "Definitions"), built from already computed pieces.

Pure: ``build`` takes the priced minute groups, histograms and the MIG and spot results and arranges them; the
reading happens in ``gpuledger.reporting``. Every dollar figure carries its price source (``fleet.price_sources``,
and ``price_sources`` per row of the tables by state, namespace, GPU model, cluster and team); every estimate carries
its assumptions (``assumptions``), every split its method (``split_by``, ``cost_allocation.idle``).

A report may be scoped to one team (``ReportInputs.team``, set on inputs narrowed by ``analysis.team_scope``): its
``scope`` says so and names the namespaces; the figures are those of the GPU-time the team's pods held.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from analysis import allocation, reconcile, utilization, waste
from analysis.costs import price_sources
from analysis.errors import AnalysisError
from analysis.mig.catalog import NotMigCapable, UnknownGpuModel, load_catalog
from analysis.pricing.freshness import stale_prices
from analysis.states import HELD_STATES, IDLE_STATES, StateRules
from analysis.window import Window

NO_PODS = (
    "no pod held a GPU in this window, so there is no OpenCost or Kubecost allocation to compare: run the node agent "
    "(gpuledger collect) or scrape kube-state-metrics with dcgm-exporter's pod labels"
)
NO_PRICES = "no GPU-time in this window has a price: set gpu_prices or instance_type_prices, or import the bill"


class UnknownTeam(AnalysisError):
    def __init__(self, team: str, known: Sequence[str]) -> None:
        names = ", ".join(sorted(known)) or "none configured"
        super().__init__(f"team {team!r} is not in the teams setting (teams: {names}): add it, or pass one of them")


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
    """Nodes with GPUs that never reported (``analysis.silent_gpus.partly_reporting``); their time is in ``groups``."""
    now: dt.datetime | None = None
    """When the report is made: shipped price snapshots older than 90 days by then are flagged
    (``analysis.pricing.freshness``); None skips the check."""
    gpus_by_cluster: Mapping[str, int] = field(default_factory=dict)
    """Distinct GPUs sampled in the window per cluster (the ``by_cluster`` rows' ``gpus``; absent: not counted)."""
    team: str | None = None
    """The team the inputs were narrowed to (``analysis.team_scope.team_inputs``); None: the whole fleet."""


def build(inputs: ReportInputs) -> dict[str, Any]:
    """The report of ``inputs``; a team's report when ``inputs.team`` is set (``scope.team``, ``scope.namespaces``)."""
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
    silent_nodes = silent_rows(partly.drop("first_silent", "last_silent"), groups) if partly is not None else []
    silent = (
        sum(float(n["silent_gpu_hours"] or 0.0) for n in silent_nodes),
        sum(float(n["cost_usd"] or 0.0) for n in silent_nodes),
    )
    namespaces = sorted({n for n in groups["namespace"].to_list() if n is not None}) if inputs.team else []
    return {
        "window": {"start": inputs.window.start.isoformat(), "end": inputs.window.end.isoformat()},
        "scope": {"team": inputs.team, "namespaces": namespaces},
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
        "states_price_sources": sources_by(groups, "state"),
        "utilization": {
            "mean_pct": utilization.mean_pct(groups),
            "allocation_rate": utilization.allocation_rate(groups),
            "by_namespace": with_sources(
                utilization.by(groups, "namespace", inputs.top_n, inputs.histogram), groups, "namespace"
            ),
            "by_model": with_sources(
                utilization.by(groups, "gpu_model", inputs.top_n, inputs.histogram), groups, "gpu_model"
            ),
            "by_workload": utilization.by(groups, "workload", inputs.top_n),
            "by_node": utilization.by(groups, "node", inputs.top_n),
            "hour_of_week": inputs.heatmap.with_columns(pl.col(pl.Float64).round(4)).to_dicts(),
        },
        "by_cluster": by_cluster(groups, inputs.gpus_by_cluster),
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
        "reconciliation": {
            **reconcile.reconciliation(groups, silent),
            "missing_inputs": reconciliation_missing(groups),
        },
        "partly_reporting_nodes": silent_nodes,
        "cost_allocation": {
            "idle": inputs.idle_mode,
            "teams_configured": bool(inputs.teams),
            "by_team": team_rows(teams, groups, inputs.teams, inputs.idle_mode),
        },
        "mig_fit": mig_capability(
            inputs.mig_fit or {"workloads": [], "gpus_now": None, "gpus_needed": None, "savings_usd_month": None},
            groups,
        ),
        "spot": inputs.spot or {"candidates": [], "savings_usd_month": None},
        "assumptions": {
            "active_threshold_pct": inputs.rules.active_threshold_pct,
            "held_memory_gib": inputs.rules.held_memory_bytes / (1 << 30),
            **inputs.assumptions,
        },
    }


def sources_by(groups: pl.DataFrame, key: str) -> dict[str, list[str]]:
    """Per value of ``key``, the price sources of its GPU-time (most dollars first; a null key is ``""``)."""
    rows = (
        groups.filter(pl.col("price_source").is_not_null())
        .group_by(key, "price_source")
        .agg(pl.col("cost_usd").sum())
        .sort([key, "cost_usd", "price_source"], descending=[False, True, False], nulls_last=True)
    )
    out: dict[str, list[str]] = {}
    for value, source, _ in rows.iter_rows():
        out.setdefault("" if value is None else str(value), []).append(str(source))
    return out


def with_sources(rows: list[dict[str, Any]], groups: pl.DataFrame, key: str) -> list[dict[str, Any]]:
    """``rows`` (one per ``key``, as ``analysis.utilization.by`` labels them) with their ``price_sources``."""
    found = sources_by(groups, key)
    labelled = {"(no holder)": "", "(unknown)": ""}
    return [{**r, "price_sources": found.get(labelled.get(str(r[key]), str(r[key])), [])} for r in rows]


def by_cluster(groups: pl.DataFrame, gpus: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per cluster: GPUs (when counted), GPU-hours, active and idle GPU-hours, idle waste, no-data GPU-hours, mean
    utilization, allocation rate, cost and its price sources; most expensive first."""
    state = pl.col("state")
    rows = (
        groups.group_by("cluster")
        .agg(
            pl.col("gpu_hours").sum().round(4).alias("gpu_hours"),
            pl.col("gpu_hours").filter(state == "active").sum().round(4).alias("active_hours"),
            pl.col("gpu_hours").filter(state.is_in(IDLE_STATES)).sum().round(4).alias("idle_hours"),
            pl.col("cost_usd").filter(state.is_in(IDLE_STATES)).sum().round(2).alias("idle_cost_usd"),
            pl.col("gpu_hours").filter(state == "no_data").sum().round(4).alias("no_data_hours"),
            (pl.col("busy_weighted").sum() / pl.col("busy_share").sum()).round(2).alias("mean_pct"),
            (pl.col("gpu_hours").filter(state.is_in(HELD_STATES)).sum() / pl.col("observed_hours").sum())
            .round(4)
            .alias("allocation_rate"),
            pl.col("cost_usd").sum().round(2).alias("cost_usd"),
        )
        .sort(["cost_usd", "cluster"], descending=[True, False], nulls_last=True)
        .to_dicts()
    )
    found = sources_by(groups, "cluster")
    return [
        {
            **r,
            "cluster": r["cluster"] or "(unknown)",
            "gpus": gpus.get(r["cluster"] or ""),
            "price_sources": found.get(r["cluster"] or "", []),
        }
        for r in rows
    ]


def silent_rows(partly: pl.DataFrame, groups: pl.DataFrame) -> list[dict[str, Any]]:
    """The nodes with GPUs that never reported, each with the price sources of its no_data time."""
    key = pl.concat_str(pl.col("cluster"), pl.col("node"), separator="/").alias("_node")
    found = sources_by(groups.filter(pl.col("state") == "no_data").with_columns(key), "_node")
    return [{**r, "price_sources": found.get(f"{r['cluster']}/{r['node']}", [])} for r in partly.to_dicts()]


def team_rows(
    teams: pl.DataFrame, groups: pl.DataFrame, mapping: Mapping[str, Sequence[str]], idle: str = "separate"
) -> list[dict[str, Any]]:
    """``analysis.allocation.cost_by_team``'s rows with each team's price sources (the idle and no-data lines: those
    of the GPU-time nobody held or observed; with ``idle="shared"`` a team's include the idle time shared to it)."""
    names = groups["namespace"].unique().to_list()
    team = pl.col("namespace").replace_strict(allocation.team_of(names, mapping), default=None, return_dtype=pl.String)
    held = pl.col("state").is_in(HELD_STATES) & team.is_not_null()
    line = (
        pl.when(held)
        .then(team)
        .when(pl.col("state") == "no_data")
        .then(pl.lit(allocation.NO_DATA_LINE))
        .otherwise(pl.lit(allocation.IDLE_LINE))
    )
    found = sources_by(groups.with_columns(line.alias("_line")), "_line")
    shared = found.get(allocation.IDLE_LINE, []) if idle == "shared" else []
    out = []
    for r in teams.to_dicts():
        own = found.get(str(r["team"]), [])
        extra = (
            shared if r["team"] not in (allocation.IDLE_LINE, allocation.NO_DATA_LINE) and r["shared_idle_usd"] else []
        )
        out.append({**r, "price_sources": own + [s for s in extra if s not in own]})
    return out


def reconciliation_missing(groups: pl.DataFrame) -> list[str]:
    """Why the reconciliation with OpenCost and Kubecost says nothing (empty when its inputs exist): it compares
    pod-held GPU-time, priced."""
    missing = []
    pods = groups.filter(pl.col("namespace").is_not_null() & pl.col("state").is_in(HELD_STATES))
    if pods.height == 0 or float(pods["gpu_hours"].sum() or 0.0) == 0.0:
        missing.append(NO_PODS)
    if groups.filter(pl.col("usd_per_gpu_hour").is_not_null()).height == 0:
        missing.append(NO_PRICES)
    return missing


def mig_capability(fit: dict[str, Any], groups: pl.DataFrame) -> dict[str, Any]:
    """``fit`` with ``mig_capable`` on each workload (the MIG catalog's answer for its GPU model: true, false for a
    model without MIG such as L4 or A10G, None for one the catalog does not know), and on each ``by_model`` row the
    ``price_sources`` of the GPU-time its mean price comes from."""
    catalog = load_catalog()
    known: dict[str | None, bool | None] = {}
    for w in fit.get("workloads", []):
        model = w.get("gpu_model")
        if model not in known:
            try:
                catalog.gpu(model)
                known[model] = True
            except NotMigCapable:
                known[model] = False
            except UnknownGpuModel:
                known[model] = None
    sources = sources_by(groups, "gpu_model")
    return {
        **fit,
        "workloads": [{**w, "mig_capable": known[w.get("gpu_model")]} for w in fit.get("workloads", [])],
        "by_model": [{**m, "price_sources": sources.get(str(m["gpu_model"]), [])} for m in fit.get("by_model", [])],
    }
