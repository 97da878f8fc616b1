"""The spot expected loss is shown with its inputs: in the report's JSON and its markdown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from alerts.render import to_markdown
from gpuledger.reporting import fleet_report
from gpuledger.settings import Settings
from warehouse.lake import Lake

LOSS_INPUTS = (
    "interruptions_per_node_month",
    "nodes",
    "node_hours",
    "nodes_restarted",
    "progress_lost_s",
    "restart_overhead_s",
    "image_pull_s",
    "warm_up_s",
    "lost_hours_per_interruption",
    "spot_usd_per_node_hour",
)


def test_report_shows_every_input_of_the_expected_loss(sim_warehouse: Path, settings: Settings) -> None:
    now = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    report = fleet_report(Lake(sim_warehouse), settings, start="2026-11-17", end="2026-11-20", now=now)
    spot = report["spot"]
    assert spot["assumption_values"] == {
        "checkpoint_interval_s": 300.0,
        "restart_overhead_s": 120.0,
        "image_pull_s": 300.0,
        "warm_up_s": 300.0,
        "min_serving_nodes": 2,
    }
    chosen = [c for c in spot["candidates"] if c["recommended"]]
    assert chosen
    for c in chosen:
        assert all(c[k] is not None for k in LOSS_INPUTS), c
        product = (
            c["interruptions_per_month"]
            * c["nodes_restarted"]
            * c["lost_hours_per_interruption"]
            * c["spot_usd_per_node_hour"]
        )
        assert c["interruption_cost_usd_month"] == pytest.approx(product, abs=1e-3)
        assert c["interruptions_per_month"] == pytest.approx(
            c["interruptions_per_node_month"] * c["node_hours"] / 72.0, abs=1e-3
        )
    top = chosen[0]
    text = to_markdown(report)
    assert "expected interruption cost" in text.split("## Spot candidates", 1)[1].split("\n", 1)[0]
    row = next(line for line in text.splitlines() if f"| {top['workload']} |" in line and "interruptions (" in line)
    assert f"x {top['nodes_restarted']} nodes restarted x" in row
    assert f"({top['progress_lost_s']:g} s progress + 120 s restart + 300 s image pull + 300 s warm-up)" in row
    assert f"${top['spot_usd_per_node_hour']:,.2f}/node-hour" in row
