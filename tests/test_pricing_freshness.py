"""Stale shipped price snapshots (analysis.pricing.freshness): flagged, with their date and the fix, in the report
(JSON, markdown, HTML) when a price older than 90 days priced something; never once the bill prices it all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from streamlit.testing.v1 import AppTest

from alerts.render import to_html, to_markdown
from analysis.pricing.freshness import FIX, stale_prices
from dashboards import context
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")

NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
AWS_OD = "AWS on-demand us-east-1, karpenter-provider-aws @1d927085, 2026-07-20"
SPOT = "AWS spot estimate: on-demand x (1 - 52% Spot Advisor savings), 2025-06-28"


def test_on_2026_12_02_the_on_demand_and_spot_snapshots_are_both_stale() -> None:
    stale = stale_prices([AWS_OD, SPOT], NOW)
    assert [(s["snapshot"], s["as_of"], s["age_days"]) for s in stale] == [
        ("AWS Spot Advisor savings (us-east-1)", "2025-06-28", 522),
        ("AWS on-demand us-east-1 prices (karpenter-provider-aws @1d927085)", "2026-07-20", 135),
    ]
    assert stale[1]["message"] == (
        "AWS on-demand us-east-1 prices (karpenter-provider-aws @1d927085) are from 2026-07-20, 135 days old "
        f"(over 90): {FIX}"
    )


def test_a_spot_estimate_leans_on_both_snapshots_and_fresh_or_unused_ones_are_not_flagged() -> None:
    assert [s["as_of"] for s in stale_prices([SPOT], NOW)] == ["2025-06-28", "2026-07-20"]
    assert stale_prices([AWS_OD], dt.date(2026, 10, 18)) == []  # 90 days old: not over
    assert [s["as_of"] for s in stale_prices([AWS_OD], dt.date(2026, 10, 19))] == ["2026-07-20"]
    bill = "bill (FOCUS, focus.csv, 2026-11): resource i-0abc"
    assert stale_prices([bill, "fallback: OpenCost default 0.95 USD/GPU-hour"], NOW) == []


def test_the_report_flags_stale_prices_in_json_markdown_and_html(tmp_path: Path, cli: Callable[..., Result]) -> None:
    warehouse = tmp_path / "wh"
    made = cli("simulate", "--warehouse", str(warehouse), "--gpus", "16", "--days", "1", "--end", "2026-11-03")
    assert made.exit_code == 0, made.output
    from gpuledger.reporting import fleet_report
    from gpuledger.settings import load_settings
    from warehouse.lake import Lake

    report = fleet_report(Lake(warehouse), load_settings(None), start=None, end=None, now=NOW)
    stale = report["fleet"]["stale_prices"]
    assert [s["as_of"] for s in stale] == ["2025-06-28", "2026-07-20"]
    for rendered in (to_markdown(report), to_html(report)):
        for s in stale:
            assert s["message"].split(":")[0] in rendered
        assert "Stale list prices:" in rendered
    assert "gpuledger import-bill FILE" in to_markdown(report)


def test_the_dashboard_overview_flags_stale_prices(sim_warehouse: Path, settings: Settings) -> None:
    """The dashboard judges against the real clock: the 2026-07-20 on-demand snapshot is over 90 days old from
    2026-10-19 on."""
    context.configure(sim_warehouse, Viewing(settings))
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        warnings = [w.value for w in at.warning]
        assert any(w.startswith("Stale list prices: AWS on-demand us-east-1 prices") for w in warnings), warnings
        assert any(FIX in w for w in warnings)
    finally:
        context.reset()
