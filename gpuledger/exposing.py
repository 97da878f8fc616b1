"""The cost metrics of ``gpuledger server``: one snapshot computed from the warehouse, read-only.

Every number comes from the job that computes it for the report (``gpuledger.reporting.priced_usage``: the priced
minute groups with the silent GPUs' no_data time) or the plan (``gpuledger.recommending``); the window is the
report's default window (``analysis.window.resolve``) with 1 h or 24 h instead of ``report_days``, so
``gpuledger report --start S --end E`` over the same window prints the same GPU-hours, dollars and idle waste.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from analysis import conditions
from analysis.recommend import KINDS
from analysis.states import IDLE_STATES
from analysis.window import Window, resolve
from exposition.snapshot import (
    WINDOWS,
    CostSnapshot,
    IdleWaste,
    PlanSavings,
    PriceFallback,
    SilentGpus,
    Usage,
)
from gpuledger import recommending, reporting
from gpuledger.settings import Settings
from warehouse.lake import Lake
from warehouse.maintenance import diagnosing
from warehouse.malformed import malformed_lines
from warehouse.schema import GPU_SAMPLES

USAGE_KEYS = ["cluster", "state", "namespace", "workload", "gpu_model"]
IDLE_KEYS = ["cluster", "namespace", "workload", "gpu_model"]


def window_of(newest: dt.datetime, hours: float, now: dt.datetime) -> Window:
    """``hours`` ending just after ``newest``, as the report's default window ends."""
    return resolve(None, None, newest=newest, default_days=hours / 24.0, now=now)


def windows(lake: Lake, now: dt.datetime) -> dict[str, Window]:
    """The metrics' windows (``exposition.snapshot.WINDOWS``); none while the warehouse holds no GPU-minutes."""
    newest = reporting.newest_minute(lake, now)
    if newest is None:
        return {}
    return {label: window_of(newest, hours, now) for label, hours in WINDOWS}


def usage_rows(groups: pl.DataFrame, label: str) -> list[Usage]:
    sums = groups.group_by(USAGE_KEYS).agg(pl.col("gpu_hours").sum(), pl.col("cost_usd").sum()).sort(USAGE_KEYS)
    return [
        Usage(
            r["cluster"],
            label,
            r["state"],
            r["namespace"],
            r["workload"],
            r["gpu_model"] or "",
            r["gpu_hours"],
            r["cost_usd"] or 0.0,
        )
        for r in sums.iter_rows(named=True)
    ]


def idle_rows(groups: pl.DataFrame, label: str) -> list[IdleWaste]:
    """Idle waste (``analysis.waste``: the GPU-hours in ``IDLE_STATES`` and their dollars), unrounded."""
    idle = (
        groups.filter(pl.col("state").is_in(IDLE_STATES))
        .group_by(IDLE_KEYS)
        .agg(pl.col("gpu_hours").sum(), pl.col("cost_usd").sum())
        .sort(IDLE_KEYS)
    )
    return [
        IdleWaste(
            r["cluster"],
            label,
            r["namespace"],
            r["workload"],
            r["gpu_model"] or "",
            r["gpu_hours"],
            r["cost_usd"] or 0.0,
        )
        for r in idle.iter_rows(named=True)
    ]


def fallback_rows(groups: pl.DataFrame, label: str) -> list[PriceFallback]:
    """Per cluster, the GPU-hours priced by a fallback source (``analysis.conditions.price_fallbacks``)."""
    rows = []
    for (cluster,), part in groups.group_by("cluster"):
        for r in conditions.price_fallbacks(part).iter_rows(named=True):
            rows.append(PriceFallback(str(cluster), label, r["price_source"], r["gpu_hours"]))
    return sorted(rows, key=lambda f: (f.cluster, f.price_source))


def silent_rows(partly: pl.DataFrame | None) -> list[SilentGpus]:
    """Nodes with GPUs that sent nothing (``analysis.silent_gpus.partly_reporting`` of the last hour)."""
    if partly is None:
        return []
    return [
        SilentGpus(r["cluster"], r["node"], r["gpu_model"] or "", int(r["silent_gpus"]))
        for r in partly.sort("cluster", "node").iter_rows(named=True)
    ]


def plan_rows(lake: Lake, settings: Settings, now: dt.datetime) -> list[PlanSavings]:
    """The plan's monthly savings per cluster and kind (0 for a kind with no change), over the report's default
    window, as ``gpuledger recommend`` banks them (``Applied.savings_usd_month``)."""
    plan = recommending.plan(recommending.recommendations(lake, settings, start=None, end=None, now=now, refresh=False))
    rows = []
    for cp in plan.clusters:
        by_kind = dict.fromkeys(KINDS, 0.0)
        for applied in cp.applied:
            by_kind[applied.rec.kind] = by_kind.get(applied.rec.kind, 0.0) + applied.savings_usd_month
        rows += [PlanSavings(cp.cluster, kind, usd) for kind, usd in by_kind.items()]
    return rows


def last_samples(lake: Lake, window: Window) -> dict[tuple[str, str], dt.datetime]:
    """Per (cluster, node), its newest sample in ``window``."""
    newest = (
        lake.scan(GPU_SAMPLES, start=window.start, end=window.end)
        .filter((pl.col("ts") >= window.start) & (pl.col("ts") < window.end))
        .group_by("cluster", "node")
        .agg(pl.col("ts").max())
        .collect()
    )
    return {(r["cluster"], r["node"]): r["ts"] for r in newest.iter_rows(named=True)}


def newest_minutes(groups: pl.DataFrame) -> dict[str, dt.datetime]:
    """Per cluster, its newest GPU-minute among ``groups``."""
    newest = groups.group_by("cluster").agg(pl.col("last_seen").max())
    return {r["cluster"]: r["last_seen"] for r in newest.iter_rows(named=True) if r["last_seen"] is not None}


def snapshot(lake: Lake, settings: Settings, *, now: dt.datetime) -> CostSnapshot:
    """The cost metrics now: an empty snapshot while the warehouse holds no GPU-minutes."""
    with diagnosing(lake):
        malformed = malformed_lines(lake)
        by_source = dict(malformed.by_source) if malformed is not None else {}
        spans = windows(lake, now)
        if not spans:
            return CostSnapshot(computed_at=now, malformed_lines=by_source)
        usage: list[Usage] = []
        idle: list[IdleWaste] = []
        fallbacks: list[PriceFallback] = []
        silent: list[SilentGpus] = []
        newest: dict[str, dt.datetime] = {}
        for label, window in spans.items():
            priced = reporting.priced_usage(lake, settings, window)
            groups = priced.groups
            usage += usage_rows(groups, label)
            idle += idle_rows(groups, label)
            fallbacks += fallback_rows(groups, label)
            if label == WINDOWS[0][0]:
                silent = silent_rows(priced.partly_reporting)
            newest = newest_minutes(groups) or newest
        longest = spans[WINDOWS[-1][0]]
        return CostSnapshot(
            computed_at=now,
            usage=tuple(usage),
            idle_waste=tuple(idle),
            plan_savings=tuple(plan_rows(lake, settings, now)),
            silent_gpus=tuple(silent),
            price_fallbacks=tuple(fallbacks),
            newest_minute=newest,
            node_last_sample=last_samples(lake, longest),
            malformed_lines=by_source,
        )
