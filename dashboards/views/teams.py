"""Teams: GPU cost per team (namespaces grouped by the ``teams`` setting), idle cost separate or shared."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import allocation
from dashboards import charts, data, fmt

page = data.current()
r = page.report
st.title("Teams")
st.caption(page.caption())

modes = {"separate": "Idle on its own line", "shared": "Idle shared in proportion"}
mode = st.radio(
    "Unallocated GPU cost",
    list(modes),
    index=list(modes).index(page.source.idle_cost),
    format_func=modes.__getitem__,
    horizontal=True,
    key="idle_mode",
    help="Separate: GPU-time nobody held is one line, `(idle: unallocated)`. Shared: it is shared out to the teams "
    "in proportion to the cost they hold. `(no data)` is always its own line.",
)
teams = allocation.cost_by_team(page.inputs.groups, page.source.teams, mode)
total = float(teams["total_cost_usd"].sum() or 0.0)
held_teams = teams.filter(~pl.col("team").is_in([allocation.IDLE_LINE, allocation.NO_DATA_LINE]))

spend, count, idle = st.columns(3)
spend.metric("Spend", fmt.usd(r["fleet"]["cost_usd"]), help=page.help("Every line below adds up to this."))
count.metric("Teams", fmt.count(held_teams.height), help=page.help("Namespaces grouped by the `teams` setting."))
idle.metric(
    "Idle held by teams",
    fmt.usd(float(held_teams["held_idle_cost_usd"].sum() or 0.0)),
    help=page.help("Cost of GPUs a team's pods held without using them (idle_held + idle_allocated)."),
)

st.altair_chart(charts.hbar(teams, "total_cost_usd", "team", "total cost (USD)"), width="stretch")
st.dataframe(
    teams,
    hide_index=True,
    column_config={
        "gpu_hours": st.column_config.NumberColumn("GPU-hours", format="%.1f"),
        "used_cost_usd": st.column_config.NumberColumn("used", format="dollar"),
        "held_idle_cost_usd": st.column_config.NumberColumn("held, idle", format="dollar"),
        "held_cost_usd": st.column_config.NumberColumn("held", format="dollar"),
        "shared_idle_usd": st.column_config.NumberColumn("shared idle", format="dollar"),
        "total_cost_usd": st.column_config.NumberColumn("total", format="dollar"),
        "split_by": st.column_config.TextColumn(
            "split by", help="How GPU-minutes its pods shared with other teams' were split (empty: none shared)."
        ),
    },
)
st.caption(f"Lines add up to {fmt.usd(total)}. Teams: {page.source.teams or 'none configured (one per namespace)'}.")
st.download_button(
    "Download CSV",
    teams.write_csv(),
    file_name=f"gpuledger-teams-{page.window.start:%Y%m%d}-{page.window.end:%Y%m%d}-{mode}.csv",
    mime="text/csv",
    key="teams_csv",
)
