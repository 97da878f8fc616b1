"""Rendering a fleet report (the dict from ``analysis.report``) as markdown, JSON or one self-contained HTML page.

Nothing is computed here: every number comes from the report, and each section says where its prices and
assumptions come from.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from analysis.states import STATES

MIG_ROWS = 15
Table = tuple[str, list[str], list[list[str]], int]
"""(title, header, rows, number of leading text columns)."""


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    lines = ["# gpuledger fleet report", "", _window(report), ""]
    lines += [f"- {item}" for item in _summary(report)] + [""]
    for title, header, rows, text in sections(report):
        lines += [f"## {title}", ""]
        if not rows:
            lines += ["(none in this window)", ""]
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] * text + ["---:"] * (len(header) - text)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += ["## Definitions and sources", ""] + [f"- {n}" for n in _notes(report)]
    return "\n".join(lines) + "\n"


def to_html(report: dict[str, Any]) -> str:
    """One page, no external assets: inline CSS, tables, and a bar of GPU-hours by state."""
    body = [f"<h1>gpuledger fleet report</h1><p class='window'>{html.escape(_window(report))}</p>"]
    body.append("<ul class='summary'>" + "".join(f"<li>{_md_to_html(i)}</li>" for i in _summary(report)) + "</ul>")
    body.append(_state_bar(report))
    for title, header, rows, text in sections(report):
        body.append(f"<h2>{html.escape(title)}</h2>")
        if not rows:
            body.append("<p class='empty'>(none in this window)</p>")
            continue
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        cells = "".join(
            "<tr>"
            + "".join(f"<td class='{'t' if i < text else 'n'}'>{html.escape(c)}</td>" for i, c in enumerate(r))
            + "</tr>"
            for r in rows
        )
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    body.append("<h2>Definitions and sources</h2><ul>" + "".join(f"<li>{_md_to_html(n)}</li>" for n in _notes(report)))
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>gpuledger fleet report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</ul></body></html>\n"
    )


def sections(report: dict[str, Any]) -> list[Table]:
    states, costs = report["states"], report.get("states_cost_usd", {})
    total = report["fleet"]["gpu_hours"] or 0.0
    util = report["utilization"]
    waste = report["idle_waste"]
    out: list[Table] = [
        (
            "GPU-hours by state",
            ["state", "GPU-hours", "share", "cost"],
            [[s, _num(states[s]), _share(states[s], total), _usd(costs.get(s))] for s in STATES]
            + [["**total**", _num(sum(states.values())), "", _usd(report["fleet"]["cost_usd"])]],
            1,
        ),
        (
            "Top namespaces by GPU-hours",
            ["namespace", "GPU-hours", "active hours", "mean util", "p95 util", "allocated", "cost"],
            [_util_row(r, "namespace") for r in util["by_namespace"]],
            1,
        ),
        (
            "By GPU model",
            ["GPU model", "GPU-hours", "active hours", "mean util", "p95 util", "allocated", "cost"],
            [_util_row(r, "gpu_model") for r in util["by_model"]],
            1,
        ),
        (
            "Idle workloads (held GPUs below the active threshold), most expensive first",
            [
                "namespace",
                "workload",
                "idle GPU-hours",
                "with memory held",
                "peak GiB",
                "last active",
                "cost",
                "priced by",
                "shared split by",
            ],
            [
                [
                    r["namespace"],
                    r["workload"],
                    _num(r["gpu_hours"]),
                    _num(r["idle_held_hours"]),
                    _num(r["peak_mem_gib"]),
                    r.get("last_active") or "not in window",
                    _usd(r.get("cost_usd")),
                    r.get("price_source") or "",
                    r.get("split_by") or "",
                ]
                for r in waste["by_workload"]
            ],
            2,
        ),
    ]
    silent = report.get("partly_reporting_nodes") or []
    if silent:
        out.append(
            (
                "Nodes with GPUs that never reported (their time is no_data, paid and unobserved)",
                ["node", "cluster", "GPU count from", "silent GPUs", "silent GPU-hours", "cost"],
                [
                    [
                        r["text"],
                        r["cluster"],
                        f"{r['gpu_count_basis']} {r.get('instance_type') or ''}".strip(),
                        str(r["silent_gpus"]),
                        _num(r["silent_gpu_hours"]),
                        _usd(r.get("cost_usd")),
                    ]
                    for r in silent
                ],
                3,
            )
        )
    allocation = report.get("cost_allocation")
    if allocation:
        idle = "shared in proportion" if allocation["idle"] == "shared" else "on its own line"
        out.append(
            (
                f"Cost by team (idle cost {idle})",
                ["team", "namespaces", "GPU-hours", "used", "held idle", "shared idle", "total", "shared split by"],
                [
                    [
                        r["team"],
                        r["namespaces"],
                        _num(r["gpu_hours"]),
                        _usd(r["used_cost_usd"]),
                        _usd(r["held_idle_cost_usd"]),
                        _usd(r["shared_idle_usd"]),
                        _usd(r["total_cost_usd"]),
                        r.get("split_by") or "",
                    ]
                    for r in allocation["by_team"]
                ],
                2,
            )
        )
    out += _reconciliation_tables(report.get("reconciliation"))
    out.append(_mig_table(report["mig_fit"]))
    out.append(_spot_table(report["spot"]))
    return out


STEP = {"start": "", "plus": "+", "equals": "=", "of which": "of which", "moved": "moved"}
RECONCILIATION_TITLES = {
    "cost": "Reconciliation: OpenCost's GPU cost to the fleet cost",
    "idle": "Reconciliation: Kubecost's workload idle to idle waste + underused",
}


def _reconciliation_tables(reconciliation: dict[str, Any] | None) -> list[Table]:
    """The reconciliation's two walks (``analysis.reconcile``) and its namespaces, in the report's order."""
    if not reconciliation:
        return []
    out: list[Table] = []
    for part, title in RECONCILIATION_TITLES.items():
        walk = reconciliation[part]
        rows = [
            [STEP[line["kind"]], line["line"], _num(line["gpu_hours"]), _usd(line["cost_usd"]), line["why"]]
            for line in walk["lines"]
        ]
        out.append(
            (
                title + ("" if walk["adds_up"] else " (does not add up)"),
                ["", "line", "GPU-hours", "cost", "why"],
                rows,
                2,
            )
        )
    namespaces = reconciliation["by_namespace"]
    rows = [
        [
            r["namespace"],
            r["split_by"] or "",
            _num(r["gpu_hours"]),
            _usd(r["opencost_usd"]),
            _usd(r["gpuledger_usd"]),
            _signed_usd(r["shared_difference_usd"]),
            _usd(r["kubecost_idle_usd"]),
            _usd(r["gpuledger_idle_usd"]),
        ]
        for r in namespaces[:MIG_ROWS]
    ]
    if len(namespaces) > MIG_ROWS:
        rows.append([f"... {len(namespaces) - MIG_ROWS} more (--format json lists all)", "", "", "", "", "", "", ""])
    header = [
        "namespace",
        "shared split by",
        "GPU-hours",
        "OpenCost (by request)",
        "gpuledger (by use)",
        "shared GPU difference",
        "Kubecost workload idle",
        "gpuledger idle + underused",
    ]
    out.append(("Reconciliation by namespace", header, rows, 2))
    return out


def _mig_table(fit: dict[str, Any]) -> Table:
    title = "MIG fit"
    if fit.get("gpus_now") is not None:
        title += (
            f": {fit['gpus_now']} GPUs today, {fit['gpus_needed']} with MIG packing, "
            f"{_usd(fit.get('savings_usd_month'))} per month"
        )
    workloads = sorted(fit.get("workloads", []), key=lambda w: (not w.get("fits"), -(w.get("gpu_hours") or 0.0)))
    rows = [
        [
            w["namespace"] or "",
            w["workload"] or "",
            w["gpu_model"] or "",
            _num(w.get("util_pct_p95")),
            _num(w.get("peak_mem_gib")),
            w.get("profile") or "-",
            "yes" if w.get("fits") else "no",
            w.get("reason") or "",
        ]
        for w in workloads[:MIG_ROWS]
    ]
    if len(workloads) > MIG_ROWS:
        rows.append(["", f"... {len(workloads) - MIG_ROWS} more (--format json lists all)", "", "", "", "", "", ""])
    return title, ["namespace", "workload", "GPU model", "p95 util", "peak GiB", "profile", "fits", "why"], rows, 3


def _spot_table(spot: dict[str, Any]) -> Table:
    title = "Spot candidates"
    if spot.get("savings_usd_month") is not None:
        title += f": {_usd(spot['savings_usd_month'])} per month net of interruptions"
        if spot.get("interruption_cost_usd_month") is not None:
            title += f" ({_usd(spot['interruption_cost_usd_month'])} expected interruption cost)"
    candidates: Sequence[dict[str, Any]] = spot.get("candidates", [])
    rows = [
        [
            c.get("namespace") or "",
            c.get("workload") or "",
            c.get("instance_type") or "",
            "yes" if c.get("eligible") else "no",
            _usd(c.get("gross_savings_usd_month")),
            _usd(c.get("net_savings_usd_month")),
            c.get("interruption_risk") or "",
            _spot_loss(c),
            c.get("reason") or "",
        ]
        for c in candidates
    ]
    header = [
        "namespace",
        "workload",
        "instance type",
        "eligible",
        "gross / month",
        "net / month",
        "interruptions",
        "expected loss / month",
        "why",
    ]
    return title, header, rows, 3


def _spot_loss(c: dict[str, Any]) -> str:
    """The expected loss beside its inputs: interruptions/month x nodes restarted x hours lost x node price."""
    inputs = ("interruptions_per_month", "nodes_restarted", "lost_hours_per_interruption", "spot_usd_per_node_hour")
    if any(c.get(k) is None for k in inputs):
        return _usd(c.get("interruption_cost_usd_month"))
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
        f"{_usd(c.get('interruption_cost_usd_month'))} = {c['interruptions_per_month']:.4g} interruptions "
        f"({c.get('nodes')} nodes, {_num(c.get('node_hours'))} node-hours) x {c['nodes_restarted']} nodes "
        f"restarted x {c['lost_hours_per_interruption']:.4g} h ({lost}) x ${c['spot_usd_per_node_hour']:,.2f}/node-hour"
    )


def _summary(report: dict[str, Any]) -> list[str]:
    fleet, util, waste = report["fleet"], report["utilization"], report["idle_waste"]
    total = fleet["gpu_hours"] or 0.0
    silent = fleet.get("gpus_not_reporting") or 0
    nodes = len(report.get("partly_reporting_nodes") or [])
    never = f" reporting, and **{silent}** more that never reported on {nodes} node{'s' if nodes != 1 else ''}"
    return [
        f"GPUs: **{fleet['gpus']}**" + (never if silent else ""),
        f"GPU-hours: **{total:,.1f}**",
        f"Cost: **{_usd(fleet['cost_usd'])}** ({_sources(fleet)})",
        f"Mean utilization: **{_pct(util['mean_pct'])}** (time-weighted over observed GPU-minutes); "
        f"allocated: **{_pct(_hundred(util.get('allocation_rate')))}** of observed GPU-time",
        f"Idle GPU-hours: **{waste['gpu_hours']:,.1f}** ({_share(waste['gpu_hours'], total)} of GPU-hours), "
        f"idle waste **{_usd(waste['cost_usd'])}**",
        *_underused(report.get("underused")),
        *(f"**Stale list prices:** {stale['message']}" for stale in fleet.get("stale_prices") or []),
    ]


def _underused(underused: dict[str, Any] | None) -> list[str]:
    if not underused:
        return []
    share = underused.get("share_of_active")
    of_active = f" ({_pct(_hundred(share))} of active GPU-time)" if share is not None else ""
    return [
        f"Underused GPU-hours: **{underused['gpu_hours']:,.1f}**{of_active}, **{_usd(underused['cost_usd'])}** "
        "(active GPU-time x (1 - utilization))"
    ]


def _notes(report: dict[str, Any]) -> list[str]:
    a = report.get("assumptions", {})
    notes = [
        f"active: utilization (DCGM SM activity when present) at or above {a.get('active_threshold_pct', 5)}%; "
        f"idle_held: held, below it, more than {a.get('held_memory_gib', 1)} GiB held; idle_allocated: held, no "
        "memory; unallocated: nobody holds it; no_data: no sample covers the minute.",
        "Idle waste = GPU-hours in idle_held + idle_allocated + unallocated, times their GPU-hour price "
        "(node price / GPU count).",
    ]
    underused = report.get("underused")
    if underused:
        sources = "; ".join(
            f"{src['price_source']}{' (fallback)' if src.get('price_fallback') else ''}: {_usd(src['cost_usd'])}"
            for src in underused.get("price_sources") or []
        )
        notes.append(underused["definition"] + (f" Priced by {sources}." if sources else ""))
    reconciliation = report.get("reconciliation")
    if reconciliation:
        notes += [reconciliation["cost"]["definition"], reconciliation["idle"]["definition"]]
        notes.append(f"Reconciliation: {reconciliation['prices']}.")
    for source in report["fleet"].get("price_sources", []):
        fallback = " (fallback)" if source.get("price_fallback") else ""
        notes.append(
            f"Priced by {source['price_source']}{fallback}: {_num(source['gpu_hours'])} GPU-hours, "
            f"{_usd(source['cost_usd'])}."
        )
    for section in ("mig_fit", "spot"):
        assumptions = report.get(section, {}).get("assumptions") or {}
        items = assumptions.items() if isinstance(assumptions, dict) else enumerate(assumptions)
        for key, value in items:
            label = section.replace("_", " ")
            notes.append(f"{label}: {value}" if isinstance(key, int) else f"{label}: {key} = {value}")
    return notes


def _sources(fleet: dict[str, Any]) -> str:
    sources = fleet.get("price_sources") or []
    if not sources:
        return "no prices"
    fallbacks = sum(1 for s in sources if s.get("price_fallback"))
    text = f"{len(sources)} price source{'s' if len(sources) != 1 else ''}, see below"
    return text + (f"; {fallbacks} fallback" if fallbacks else "")


def _util_row(r: dict[str, Any], key: str) -> list[str]:
    return [
        str(r[key]),
        _num(r["gpu_hours"]),
        _num(r["active_hours"]),
        _pct(r.get("mean_pct")),
        _pct(r.get("p95_pct")),
        _pct(_hundred(r.get("allocation_rate"))),
        _usd(r.get("cost_usd")),
    ]


def _state_bar(report: dict[str, Any]) -> str:
    total = report["fleet"]["gpu_hours"] or 0.0
    if not total:
        return ""
    parts = "".join(
        f"<span class='s {s}' style='width:{100.0 * report['states'][s] / total:.3f}%' "
        f"title='{s}: {report['states'][s]:,.1f} GPU-hours'></span>"
        for s in STATES
    )
    legend = "".join(f"<span class='k {s}'></span>{s} " for s in STATES)
    return f"<div class='bar'>{parts}</div><p class='legend'>{legend}</p>"


def _window(report: dict[str, Any]) -> str:
    return f"Window: {report['window']['start']} to {report['window']['end']} (UTC, end exclusive)"


def _md_to_html(text: str) -> str:
    escaped = html.escape(text)
    while "**" in escaped:
        escaped = escaped.replace("**", "<b>", 1).replace("**", "</b>", 1)
    return escaped


def _hundred(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _share(part: float, total: float) -> str:
    return f"{100.0 * part / total:.1f}%" if total else "n/a"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def _signed_usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"+${value:,.2f}" if value > 0 else "$0.00"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:72rem;color:#1d2733}
h1{font-size:1.6rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%;font-size:.88rem}th,td{padding:.3rem .5rem;border-bottom:1px solid #eef1f4}
th{text-align:left;background:#f5f7f9}td.n{text-align:right;font-variant-numeric:tabular-nums}
.window,.legend,.empty{color:#5b6876;font-size:.9rem}.bar{display:flex;height:1.4rem;border-radius:4px;overflow:hidden}
.s,.k{display:inline-block}.k{width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
.active{background:#2f9e44}.idle_held{background:#e8590c}.idle_allocated{background:#fab005}
.unallocated{background:#868e96}.no_data{background:#d0bfff}
"""
