"""A fleet report (the dict from ``analysis.report``) as titled tables, the same for every format.

Nothing is computed here: every number comes from the report. Each column says whether it holds numbers (right
aligned), text, or price-source markers (``alerts.footnotes``: ``[1]`` per row, the source's text once below the
table); a table's total row is kept apart so each format can set it off; what a split or an estimate rests on is a
note below its table. Times print as UTC to the minute (``when``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.footnotes import Footnotes, Marks
from analysis.states import STATES

MAX_ROWS = 15
TEXT, NUMBER, MARKS = "text", "number", "marks"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = TEXT
    """``text`` (left aligned), ``number`` (right aligned) or ``marks`` (price-source markers)."""


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: list[list[str]]
    total: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    """Lines below the table: footnotes, methods, rows left out."""
    empty: str = "(none in this window)"
    """What stands for the table when it has no rows."""


def _cols(*spec: str) -> tuple[Column, ...]:
    """Columns from names, a trailing ``#`` marking a number column and a trailing ``^`` a marker column."""
    out = []
    for name in spec:
        if name.endswith("#"):
            out.append(Column(name[:-1], NUMBER))
        elif name.endswith("^"):
            out.append(Column(name[:-1], MARKS))
        else:
            out.append(Column(name))
    return tuple(out)


def tables(report: dict[str, Any], footnotes: Footnotes | None = None) -> list[Table]:
    """The report's tables in order; ``footnotes`` numbers the price sources (default: the report's own)."""
    notes = footnotes or Footnotes.of(report)
    out = [
        _states(report, notes),
        _by_cluster(report, notes),
        _utilization("Top namespaces by GPU-hours", "namespace", report["utilization"]["by_namespace"], notes),
        _utilization("By GPU model", "GPU model", report["utilization"]["by_model"], notes),
        _idle_workloads(report, notes),
    ]
    silent = report.get("partly_reporting_nodes") or []
    if silent:
        out.append(_silent(silent, notes))
    if report.get("cost_allocation"):
        out.append(_teams(report, notes))
    out += _reconciliation(report.get("reconciliation"), report, notes)
    out.append(_mig(report["mig_fit"], notes))
    out.append(_spot(report["spot"], notes))
    return out


def _states(report: dict[str, Any], notes: Footnotes) -> Table:
    states, costs = report["states"], report.get("states_cost_usd", {})
    sources = report.get("states_price_sources") or {}
    total = report["fleet"]["gpu_hours"] or 0.0
    marks = Marks(notes)
    rows = [
        [s, num(states[s]), share(states[s], total), usd(costs.get(s)), marks.mark(sources.get(s, []))] for s in STATES
    ]
    return Table(
        "GPU-hours by state",
        _cols("state", "GPU-hours#", "share#", "cost#", "priced by^"),
        rows,
        total=[
            "total",
            num(sum(states.values())),
            share(sum(states.values()), total),
            usd(report["fleet"]["cost_usd"]),
            "",
        ],
        notes=marks.notes(),
    )


def _by_cluster(report: dict[str, Any], notes: Footnotes) -> Table:
    marks = Marks(notes)
    rows = [
        [
            str(r["cluster"]),
            "n/a" if r.get("gpus") is None else str(r["gpus"]),
            num(r["gpu_hours"]),
            num(r["active_hours"]),
            num(r["idle_hours"]),
            usd(r["idle_cost_usd"]),
            num(r["no_data_hours"]),
            pct(r.get("mean_pct")),
            pct(hundred(r.get("allocation_rate"))),
            usd(r.get("cost_usd")),
            marks.mark(r.get("price_sources") or []),
        ]
        for r in report.get("by_cluster") or []
    ]
    columns = _cols(
        "cluster",
        "GPUs#",
        "GPU-hours#",
        "active hours#",
        "idle GPU-hours#",
        "idle waste#",
        "no data hours#",
        "mean util#",
        "allocated#",
        "cost#",
        "priced by^",
    )
    return Table("By cluster", columns, rows, notes=marks.notes())


def _utilization(title: str, label: str, rows: list[dict[str, Any]], notes: Footnotes) -> Table:
    key = "namespace" if label == "namespace" else "gpu_model"
    marks = Marks(notes)
    body = [
        [
            str(r[key]),
            num(r["gpu_hours"]),
            num(r["active_hours"]),
            pct(r.get("mean_pct")),
            pct(r.get("p95_pct")),
            pct(hundred(r.get("allocation_rate"))),
            usd(r.get("cost_usd")),
            marks.mark(r.get("price_sources") or []),
        ]
        for r in rows
    ]
    columns = _cols(
        label, "GPU-hours#", "active hours#", "mean util#", "p95 util#", "allocated#", "cost#", "priced by^"
    )
    return Table(title, columns, body, notes=marks.notes())


def _idle_workloads(report: dict[str, Any], notes: Footnotes) -> Table:
    marks = Marks(notes)
    rows = [
        [
            r["namespace"],
            r["workload"],
            num(r["gpu_hours"]),
            num(r["idle_held_hours"]),
            num(r["peak_mem_gib"]),
            when(r.get("last_active")) if r.get("last_active") else "not in window",
            usd(r.get("cost_usd")),
            marks.mark([r.get("price_source")]),
            r.get("split_by") or "",
        ]
        for r in report["idle_waste"]["by_workload"]
    ]
    columns = _cols(
        "namespace",
        "workload",
        "idle GPU-hours#",
        "with memory held#",
        "peak GiB#",
        "last active (UTC)",
        "cost#",
        "priced by^",
        "shared split by",
    )
    return Table(
        "Idle workloads (held GPUs below the active threshold), most expensive first",
        columns,
        rows,
        notes=marks.notes(),
    )


def _silent(silent: list[dict[str, Any]], notes: Footnotes) -> Table:
    marks = Marks(notes)
    rows = [
        [
            r["text"],
            r["cluster"],
            f"{r['gpu_count_basis']} {r.get('instance_type') or ''}".strip(),
            str(r["silent_gpus"]),
            num(r["silent_gpu_hours"]),
            usd(r.get("cost_usd")),
            marks.mark(r.get("price_sources") or []),
        ]
        for r in silent
    ]
    return Table(
        "Nodes with GPUs that never reported (their time is no_data, paid and unobserved)",
        _cols("node", "cluster", "GPU count from", "silent GPUs#", "silent GPU-hours#", "cost#", "priced by^"),
        rows,
        notes=marks.notes(),
    )


def _teams(report: dict[str, Any], notes: Footnotes) -> Table:
    allocation = report["cost_allocation"]
    shared = allocation["idle"] == "shared"
    marks = Marks(notes)
    rows = [
        [
            r["team"],
            r["namespaces"],
            num(r["gpu_hours"]),
            usd(r["used_cost_usd"]),
            usd(r["held_idle_cost_usd"]),
            usd(r["shared_idle_usd"]),
            usd(r["total_cost_usd"]),
            r.get("split_by") or "",
            marks.mark(r.get("price_sources") or []),
        ]
        for r in allocation["by_team"]
    ]
    teams = (
        "Teams are namespaces grouped by the `teams` setting; a namespace no pattern matches is its own team."
        if allocation.get("teams_configured", True)
        else "No teams configured (the `teams` setting): each namespace is its own team."
    )
    method = (
        "Idle cost (GPU-time no pod held) is shared out to the teams in proportion to the cost they held (shared idle)."
        if shared
        else "Idle cost (GPU-time no pod held) is its own line, (idle: unallocated); no_data time is (no data)."
    )
    split = "Shared split by: how GPU-minutes several teams' pods shared were divided (by measured use)."
    return Table(
        f"Cost by team (idle cost {'shared in proportion' if shared else 'on its own line'})",
        _cols(
            "team",
            "namespaces",
            "GPU-hours#",
            "used#",
            "held idle#",
            "shared idle#",
            "total#",
            "shared split by",
            "priced by^",
        ),
        rows,
        notes=[teams, method, split, *marks.notes()],
    )


STEP = {"start": "", "plus": "+", "equals": "=", "of which": "of which", "moved": "moved"}
RECONCILIATION_TITLES = {
    "cost": "Reconciliation: OpenCost's GPU cost to the fleet cost",
    "idle": "Reconciliation: Kubecost's workload idle to idle waste + underused",
}


def _reconciliation(reconciliation: dict[str, Any] | None, report: dict[str, Any], notes: Footnotes) -> list[Table]:
    """The reconciliation's two walks (``analysis.reconcile``) and its namespaces, or why it is not shown."""
    if not reconciliation:
        return []
    missing = reconciliation.get("missing_inputs") or []
    if missing:
        return [
            Table("Reconciliation with OpenCost and Kubecost", (), [], empty="Not shown: " + "; ".join(missing) + ".")
        ]
    marks = Marks(notes)
    priced = marks.mark(str(s["price_source"]) for s in report["fleet"].get("price_sources") or [] if s["price_source"])
    prices = [f"Every line is priced at each minute's own GPU-hour price: {priced}." if priced else "No prices."]
    out: list[Table] = []
    for part, title in RECONCILIATION_TITLES.items():
        walk = reconciliation[part]
        rows = [
            [STEP[line["kind"]], line["line"], num(line["gpu_hours"]), usd(line["cost_usd"]), line["why"]]
            for line in walk["lines"]
        ]
        out.append(
            Table(
                title + ("" if walk["adds_up"] else " (does not add up)"),
                _cols("step", "line", "GPU-hours#", "cost#", "why"),
                rows,
                notes=[walk["definition"], *prices, *marks.notes()],
            )
        )
    namespaces = reconciliation["by_namespace"]
    rows = [
        [
            r["namespace"],
            r["split_by"] or "",
            num(r["gpu_hours"]),
            usd(r["opencost_usd"]),
            usd(r["gpuledger_usd"]),
            signed_usd(r["shared_difference_usd"]),
            usd(r["kubecost_idle_usd"]),
            usd(r["gpuledger_idle_usd"]),
        ]
        for r in namespaces[:MAX_ROWS]
    ]
    columns = _cols(
        "namespace",
        "shared split by",
        "GPU-hours#",
        "OpenCost (by request)#",
        "gpuledger (by use)#",
        "shared GPU difference#",
        "Kubecost workload idle#",
        "gpuledger idle + underused#",
    )
    out.append(
        Table("Reconciliation by namespace", columns, rows, notes=[*_more(len(namespaces)), *prices, *marks.notes()])
    )
    return out


def _more(count: int, what: str = "rows") -> list[str]:
    return [f"... {count - MAX_ROWS} more {what} (--format json lists all)."] if count > MAX_ROWS else []


def _mig(fit: dict[str, Any], notes: Footnotes) -> Table:
    title = "MIG fit"
    if fit.get("gpus_now") is not None:
        title += (
            f": {fit['gpus_now']} GPUs today, {fit['gpus_needed']} with MIG packing, "
            f"{usd(fit.get('savings_usd_month'))} per month"
        )
    everyone = fit.get("workloads", [])
    capable = [w for w in everyone if w.get("mig_capable", True)]
    workloads = sorted(capable, key=lambda w: (not w.get("fits"), -(w.get("gpu_hours") or 0.0)))
    rows = [
        [
            w["namespace"] or "",
            w["workload"] or "",
            w["gpu_model"] or "",
            num(w.get("util_pct_p95")),
            num(w.get("peak_mem_gib")),
            w.get("profile") or "-",
            "yes" if w.get("fits") else "no",
            w.get("reason") or "",
        ]
        for w in workloads[:MAX_ROWS]
    ]
    lines = _more(len(workloads), "workloads")
    for capable_value, why in (
        (False, "GPU models without MIG ({models}): to share those GPUs, use time-slicing"),
        (None, "GPU models the MIG catalog does not list ({models}): add their profiles to assess them"),
    ):
        left = [w for w in everyone if w.get("mig_capable", True) is capable_value]
        if left:
            models = ", ".join(sorted({str(w.get("gpu_model") or "unknown") for w in left}))
            lines.append(f"Not in the table: {len(left)} workloads on " + why.format(models=models) + ".")
    marks = Marks(notes)
    for m in fit.get("by_model") or []:
        if m.get("gpus_freed"):
            sources = m.get("price_sources") or [m.get("price_source")]
            lines.append(
                f"{m['gpu_model']}: {m['gpus_now']} GPUs today, {m['gpus_needed']} with MIG packing, "
                f"{m['gpus_freed']} freed x {usd(m.get('usd_per_gpu_hour'))}/GPU-hour (the mean paid in the window "
                f"{marks.mark(sources)}) x 730 h = {usd(m.get('savings_usd_month'))} per month."
            )
    lines += marks.notes()
    columns = _cols("namespace", "workload", "GPU model", "p95 util#", "peak GiB#", "profile", "fits", "why")
    return Table(title, columns, rows, notes=lines, empty="(no workload on a MIG-capable GPU in this window)")


def _spot(spot: dict[str, Any], notes: Footnotes) -> Table:
    title = "Spot candidates"
    if spot.get("savings_usd_month") is not None:
        title += f": {usd(spot['savings_usd_month'])} per month net of interruptions"
        if spot.get("interruption_cost_usd_month") is not None:
            title += f" ({usd(spot['interruption_cost_usd_month'])} expected interruption cost)"
    candidates: Sequence[dict[str, Any]] = spot.get("candidates", [])
    marks = Marks(notes)
    rows = [
        [
            c.get("namespace") or "",
            c.get("workload") or "",
            c.get("instance_type") or "",
            "yes" if c.get("eligible") else "no",
            usd(c.get("gross_savings_usd_month")),
            usd(c.get("net_savings_usd_month")),
            marks.mark([c.get("on_demand_price_source"), c.get("spot_price_source")]),
            c.get("interruption_risk") or "",
            _spot_loss(c),
            c.get("reason") or "",
        ]
        for c in candidates
    ]
    columns = _cols(
        "namespace",
        "workload",
        "instance type",
        "eligible",
        "gross / month#",
        "net / month#",
        "priced by^",
        "interruptions",
        "expected loss / month",
        "why",
    )
    return Table(title, columns, rows, notes=marks.notes())


def _spot_loss(c: dict[str, Any]) -> str:
    """The expected loss beside its inputs: interruptions/month x nodes restarted x hours lost x node price."""
    inputs = ("interruptions_per_month", "nodes_restarted", "lost_hours_per_interruption", "spot_usd_per_node_hour")
    if any(c.get(k) is None for k in inputs):
        return usd(c.get("interruption_cost_usd_month"))
    lost = " + ".join(
        f"{c.get(k) or 0:g} s {label}"
        for k, label in (
            ("progress_lost_s", "progress"),
            ("restart_overhead_s", "restart"),
            ("image_pull_s", "image pull"),
            ("warm_up_s", "warm-up"),
        )
    )
    return (
        f"{usd(c.get('interruption_cost_usd_month'))} = {c['interruptions_per_month']:.4g} interruptions "
        f"({c.get('nodes')} nodes, {num(c.get('node_hours'))} node-hours) x {c['nodes_restarted']} nodes "
        f"restarted x {c['lost_hours_per_interruption']:.4g} h ({lost}) x ${c['spot_usd_per_node_hour']:,.2f}/node-hour"
    )


def title(report: dict[str, Any]) -> str:
    team = (report.get("scope") or {}).get("team")
    return f"gpuledger report: team {team}" if team else "gpuledger fleet report"


def scope_line(report: dict[str, Any]) -> str | None:
    """What a team's report covers (None for the fleet's)."""
    scope = report.get("scope") or {}
    if not scope.get("team"):
        return None
    names = ", ".join(scope.get("namespaces") or []) or "none held a GPU in this window"
    return (
        f"Team {scope['team']}: namespaces {names} (the `teams` setting). The figures are the GPU-time its pods held; "
        "unallocated and unobserved time, which no team holds, is in the fleet report."
    )


def window_line(report: dict[str, Any]) -> str:
    return f"Window: {when(report['window']['start'])} to {when(report['window']['end'])} UTC (end exclusive)"


def summary(report: dict[str, Any]) -> list[str]:
    """The headline figures, as markdown list items (``**`` for bold)."""
    fleet, util, waste = report["fleet"], report["utilization"], report["idle_waste"]
    total = fleet["gpu_hours"] or 0.0
    silent = fleet.get("gpus_not_reporting") or 0
    nodes = len(report.get("partly_reporting_nodes") or [])
    never = f" reporting, and **{silent}** more that never reported on {nodes} node{'s' if nodes != 1 else ''}"
    team = (report.get("scope") or {}).get("team")
    gpus = (
        f"GPUs its pods held: **{fleet['gpus']}**" if team else f"GPUs: **{fleet['gpus']}**" + (never if silent else "")
    )
    return [
        gpus,
        f"GPU-hours: **{total:,.1f}**",
        f"Cost: **{usd(fleet['cost_usd'])}** ({price_count(fleet)})",
        f"Mean utilization: **{pct(util['mean_pct'])}** (time-weighted over observed GPU-minutes); "
        f"allocated: **{pct(hundred(util.get('allocation_rate')))}** of observed GPU-time",
        f"Idle GPU-hours: **{waste['gpu_hours']:,.1f}** ({share(waste['gpu_hours'], total)} of GPU-hours), "
        f"idle waste **{usd(waste['cost_usd'])}**",
        *_underused(report.get("underused")),
        *(f"**Stale list prices:** {stale['message']}" for stale in fleet.get("stale_prices") or []),
    ]


def _underused(underused: dict[str, Any] | None) -> list[str]:
    if not underused:
        return []
    part = underused.get("share_of_active")
    of_active = f" ({pct(hundred(part))} of active GPU-time)" if part is not None else ""
    return [
        f"Underused GPU-hours: **{underused['gpu_hours']:,.1f}**{of_active}, **{usd(underused['cost_usd'])}** "
        "(active GPU-time x (1 - utilization))"
    ]


def definitions(report: dict[str, Any], footnotes: Footnotes) -> list[str]:
    """The report's definitions, its price sources (numbered as in the tables) and the estimates' assumptions."""
    a = report.get("assumptions", {})
    notes = [
        f"active: utilization (DCGM SM activity when present) at or above {a.get('active_threshold_pct', 5)}%; "
        f"idle_held: held, below it, more than {a.get('held_memory_gib', 1)} GiB held; idle_allocated: held, no "
        "memory; unallocated: nobody holds it; no_data: no sample covers the minute.",
        "Idle waste = GPU-hours in idle_held + idle_allocated + unallocated, times their GPU-hour price "
        "(node price / GPU count).",
    ]
    marks = Marks(footnotes)
    underused = report.get("underused")
    if underused:
        parts = "; ".join(
            f"{marks.mark([str(src['price_source'])])} {usd(src['cost_usd'])}"
            for src in underused.get("price_sources") or []
            if src.get("price_source")
        )
        notes.append(underused["definition"] + (f" Priced by {parts}." if parts else ""))
    for source in report["fleet"].get("price_sources", []):
        if source.get("price_source"):
            number = footnotes.number(str(source["price_source"]))
            notes.append(
                f"Price source [{number}] {footnotes.text(number)}: {num(source['gpu_hours'])} GPU-hours, "
                f"{usd(source['cost_usd'])}."
            )
    for section in ("mig_fit", "spot"):
        assumptions = report.get(section, {}).get("assumptions") or {}
        label = section.replace("_", " ")
        if isinstance(assumptions, dict):
            notes += [
                f"{label}: {key} = {_value(value)}" for key, value in assumptions.items() if key != "price_sources"
            ]
        else:
            notes += [f"{label}: {value}" for value in assumptions]
    return notes


def _value(value: object) -> str:
    """An assumption's value as text: a mapping as ``key: value`` pairs, a list joined, never a Python literal."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    return str(value)


def price_count(fleet: dict[str, Any]) -> str:
    sources = fleet.get("price_sources") or []
    if not sources:
        return "no prices"
    fallbacks = sum(1 for s in sources if s.get("price_fallback"))
    text = f"{len(sources)} price source{'s' if len(sources) != 1 else ''}, see below"
    return text + (f"; {fallbacks} fallback" if fallbacks else "")


def when(iso: str | None) -> str:
    """An ISO time as UTC to the minute (``2026-11-25 00:00``), with seconds only when it has any."""
    if not iso:
        return "n/a"
    at = dt.datetime.fromisoformat(iso)
    at = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return f"{at:%Y-%m-%d %H:%M}" + (f":{at:%S}" if at.second else "")


def hundred(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def share(part: float, total: float) -> str:
    return f"{100.0 * part / total:.1f}%" if total else "n/a"


def usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def signed_usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"+${value:,.2f}" if value > 0 else "$0.00"
