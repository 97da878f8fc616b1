"""Teams: GPU cost per team (namespaces grouped by the ``teams`` setting), idle cost separate or shared."""

from __future__ import annotations

import polars as pl
import streamlit as st

from analysis import allocation
from dashboards import charts, columns, data, fmt, tables

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
spend_usd = float(r["fleet"]["cost_usd"])
totals, moved = fmt.cents_adding_up(teams["total_cost_usd"].to_list(), spend_usd)
teams = teams.with_columns(pl.Series("total_cost_usd", totals, dtype=pl.Float64))
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
tables.table(teams, columns.TEAMS)
rounding = (
    f" Each line is rounded to the cent; the {moved} cent(s) that rounding left over went to the largest lines, so "
    "the totals add up to the spend."
    if moved
    else ""
)
if round(total, 2) != round(spend_usd, 2):
    st.warning(f"The lines add up to {fmt.usd(total)}, not the spend {fmt.usd(spend_usd)}.")
st.caption(
    f"Totals add up to {fmt.usd(total)}.{rounding} Teams: {page.source.teams or 'none configured (one per namespace)'}."
)
st.download_button(
    "Download CSV",
    teams.write_csv(),
    file_name=f"gpuledger-teams-{page.window.start:%Y%m%d}-{page.window.end:%Y%m%d}-{mode}.csv",
    mime="text/csv",
    key="teams_csv",
)
