"""GPU cost per team, with idle cost shown on its own line or shared out, as OpenCost and Kubecost do.

A team is a set of namespaces (``teams`` setting: team -> namespace glob patterns; a namespace no pattern matches
is its own team). What a team's pods hold is the team's cost, used or not (a GPU-minute several teams' pods shared
is divided by ``analysis.shares``, and ``split_by`` names the methods): ``active``, ``idle_held`` and
``idle_allocated`` GPU-time. GPU-time nobody holds (``unallocated``) is the cluster's idle cost:

- ``idle="separate"``: it is one line of its own, ``(idle: unallocated)``;
- ``idle="shared"``: it is shared out to the teams in proportion to the cost they hold.

GPU-time without data (``no_data``) is paid for too and is always its own line, ``(no data)``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Literal

import polars as pl

from analysis.errors import AnalysisError
from analysis.states import HELD_STATES

IdleMode = Literal["separate", "shared"]
IDLE_LINE = "(idle: unallocated)"
NO_DATA_LINE = "(no data)"


class UnknownIdleMode(AnalysisError):
    def __init__(self, mode: str) -> None:
        super().__init__(f"unknown idle cost mode {mode!r}: use 'separate' (its own line) or 'shared' (in proportion)")


def team_of(namespaces: Sequence[str | None], teams: Mapping[str, Sequence[str]]) -> dict[str | None, str | None]:
    """Each namespace's team: the first team with a matching glob pattern, else the namespace itself."""
    out: dict[str | None, str | None] = {}
    for namespace in namespaces:
        out[namespace] = namespace
        if namespace is None:
            continue
        for team, patterns in teams.items():
            if any(fnmatch.fnmatchcase(namespace, p) for p in patterns):
                out[namespace] = team
                break
    return out


def cost_by_team(
    priced_groups: pl.DataFrame, teams: Mapping[str, Sequence[str]], idle: str = "separate"
) -> pl.DataFrame:
    """One row per team (plus the idle and no-data lines): GPU-hours, held cost split into used and idle, shared idle
    and total; the totals of all rows equal the fleet's cost in both modes."""
    if idle not in ("separate", "shared"):
        raise UnknownIdleMode(idle)
    if "split_method" not in priced_groups.columns:
        priced_groups = priced_groups.with_columns(pl.lit(None, pl.String).alias("split_method"))
    mapping = team_of(priced_groups["namespace"].unique().to_list(), teams)
    frame = priced_groups.with_columns(
        pl.col("namespace").replace_strict(mapping, default=None, return_dtype=pl.String).alias("team")
    )
    held = frame.filter(pl.col("state").is_in(HELD_STATES) & pl.col("team").is_not_null())
    per_team = (
        held.group_by("team")
        .agg(
            pl.col("namespace").unique().sort().str.join(", ").alias("namespaces"),
            pl.col("gpu_hours").sum().alias("gpu_hours"),
            pl.col("cost_usd").filter(pl.col("state") == "active").sum().alias("used_cost_usd"),
            pl.col("cost_usd").filter(pl.col("state") != "active").sum().alias("held_idle_cost_usd"),
            pl.col("split_method").drop_nulls().unique().sort().str.join(", ").alias("split_by"),
        )
        .with_columns((pl.col("used_cost_usd") + pl.col("held_idle_cost_usd")).alias("held_cost_usd"))
    )
    unheld = frame.filter(~(pl.col("state").is_in(HELD_STATES) & pl.col("team").is_not_null()))
    idle_cost = float(unheld.filter(pl.col("state") != "no_data")["cost_usd"].sum() or 0.0)
    idle_hours = float(unheld.filter(pl.col("state") != "no_data")["gpu_hours"].sum() or 0.0)
    no_data = unheld.filter(pl.col("state") == "no_data")
    held_total = float(per_team["held_cost_usd"].sum() or 0.0)
    if idle == "shared" and held_total > 0:
        per_team = per_team.with_columns((pl.col("held_cost_usd") / held_total * idle_cost).alias("shared_idle_usd"))
        extra: list[dict[str, object]] = []
    else:
        per_team = per_team.with_columns(pl.lit(0.0).alias("shared_idle_usd"))
        extra = [_line(IDLE_LINE, idle_hours, idle_cost)]
    extra.append(_line(NO_DATA_LINE, float(no_data["gpu_hours"].sum() or 0.0), float(no_data["cost_usd"].sum() or 0.0)))
    per_team = per_team.with_columns((pl.col("held_cost_usd") + pl.col("shared_idle_usd")).alias("total_cost_usd"))
    lines = pl.concat([per_team, pl.DataFrame(extra, schema=per_team.schema)], how="vertical")
    return (
        lines.with_columns(pl.col(pl.Float64).round(2))
        .with_columns(pl.col("gpu_hours").round(4))
        .sort("total_cost_usd", "team", descending=[True, False])
    )


def _line(name: str, hours: float, cost: float) -> dict[str, object]:
    return {
        "team": name,
        "namespaces": "",
        "gpu_hours": hours,
        "used_cost_usd": 0.0,
        "held_idle_cost_usd": 0.0,
        "held_cost_usd": 0.0,
        "shared_idle_usd": 0.0,
        "total_cost_usd": cost,
        "split_by": "",
    }
