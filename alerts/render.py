"""Rendering a fleet report (the dict from ``analysis.report``) as markdown or JSON. No numbers are computed here."""

from __future__ import annotations

import json
from typing import Any

from analysis.states import STATES


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def to_markdown(report: dict[str, Any]) -> str:
    fleet, states, util = report["fleet"], report["states"], report["utilization"]
    total = fleet["gpu_hours"] or 0.0
    lines = [
        "# gpuledger fleet report",
        "",
        f"Window: {report['window']['start']} to {report['window']['end']} (UTC, end exclusive)",
        "",
        f"- GPUs: **{fleet['gpus']}**",
        f"- GPU-hours: **{total:,.1f}**",
        f"- Mean utilization: **{_pct(util['mean_pct'])}** (time-weighted over observed GPU-minutes)",
        f"- Idle GPU-hours: **{report['idle_waste']['gpu_hours']:,.1f}** "
        f"({_share(report['idle_waste']['gpu_hours'], total)} of GPU-hours)",
        f"- Cost: {_usd(fleet['cost_usd'])}",
        "",
        "## GPU-hours by state",
        "",
        "| state | GPU-hours | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {s} | {states[s]:,.1f} | {_share(states[s], total)} |" for s in STATES]
    lines += [f"| **total** | **{sum(states.values()):,.1f}** | |", ""]
    lines += _table(
        "Top namespaces by GPU-hours",
        ["namespace", "GPU-hours", "active hours", "mean util"],
        [
            [r["namespace"], f"{r['gpu_hours']:,.1f}", f"{r['active_hours']:,.1f}", _pct(r["mean_pct"])]
            for r in util["by_namespace"]
        ],
    )
    lines += _table(
        "By GPU model",
        ["GPU model", "GPU-hours", "active hours", "mean util"],
        [
            [r["gpu_model"], f"{r['gpu_hours']:,.1f}", f"{r['active_hours']:,.1f}", _pct(r["mean_pct"])]
            for r in util["by_model"]
        ],
    )
    lines += _table(
        "Top idle workloads (held GPU-hours below the active threshold)",
        ["namespace", "workload", "idle GPU-hours", "of which memory held", "peak memory GiB"],
        [
            [
                r["namespace"],
                r["workload"],
                f"{r['gpu_hours']:,.1f}",
                f"{r['idle_held_hours']:,.1f}",
                f"{r['peak_mem_gib']:,.1f}",
            ]
            for r in report["idle_waste"]["by_workload"]
        ],
        text_columns=2,
    )
    lines.append(
        "States: active >= threshold utilization; idle_held = held with memory in use; idle_allocated = held, no "
        "memory; unallocated = nobody holds it; no_data = no sample covers the minute."
    )
    return "\n".join(lines) + "\n"


def _table(title: str, header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    out = [f"## {title}", ""]
    if not rows:
        return [*out, "(none in this window)", ""]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "|".join(["---"] * text_columns + ["---:"] * (len(header) - text_columns)) + "|")
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _share(part: float, total: float) -> str:
    return f"{100.0 * part / total:.1f}%" if total else "n/a"


def _usd(value: float | None) -> str:
    return "not priced yet (price catalog pending)" if value is None else f"${value:,.2f}"
