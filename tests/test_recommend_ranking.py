"""Ranking by expected savings (issue 14, point 4): score = savings x confidence / (1 + pods restarted + 4 x nodes
drained), ties broken deterministically, and the confidence and expected savings shown in every list (the exported
README.md and index.json, the dashboard's Recommendations page, the report's top recommendations)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from alerts.report import report_message
from analysis import recommend
from analysis.recommend.files import render
from analysis.window import Window
from dashboards import context, fmt
from gpuledger import recommending, report_sending, reporting
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from warehouse.lake import Lake

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")
WINDOW = Window(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), dt.datetime(2026, 11, 27, tzinfo=dt.UTC))


def rec(
    kind: str,
    workload: str,
    savings: float,
    confidence: float,
    *,
    pods: int = 0,
    nodes_drained: int = 0,
    change: str | None = None,
) -> recommend.Recommendation:
    return recommend.Recommendation(
        kind=kind,
        target={"cluster": "prod", "node_group": "pool-a", "namespace": "team", "workload": workload},
        change=change or f"{kind} for team/{workload}",
        evidence={"gpu_minutes": 10080},
        savings_usd_month=savings,
        price_source="aws on-demand (test)",
        disruption={"pods_restarted": pods, "node_drain": nodes_drained > 0, "nodes_drained": nodes_drained},
        risk="low",
        confidence=confidence,
    )


def test_a_certain_35000_ranks_above_a_quarter_sure_40000() -> None:
    sure = rec("spot", "serve", 35_000.0, 1.0, pods=6)
    unsure = rec("gpu-count", "sweep", 40_000.0, 0.25, pods=6)
    ranked = recommend.ranked([unsure, sure], recommend.KINDS)
    assert ranked == [sure, unsure]
    assert sure.expected_savings_usd_month == 35_000.0 and unsure.expected_savings_usd_month == 10_000.0
    assert sure.score == pytest.approx(35_000.0 / 7) and unsure.score == pytest.approx(10_000.0 / 7)


def test_disruption_still_divides_expected_savings() -> None:
    # same expected savings ($20,000): a node drain weighs 4 pods
    calm = rec("gpu-model", "a", 20_000.0, 1.0, pods=1)
    drains = rec("autoscaling", "b", 40_000.0, 0.5, nodes_drained=1)
    assert recommend.ranked([drains, calm], recommend.KINDS) == [calm, drains]
    assert drains.disruption_units == 5.0 and calm.disruption_units == 2.0


def test_ties_are_broken_the_same_way_whatever_the_input_order() -> None:
    items = [
        rec("spot", "b", 1_000.0, 1.0),  # score 1000, expected 1000
        rec("gpu-count", "a", 2_000.0, 0.5),  # score 1000, expected 1000, more savings on less evidence
        rec("gpu-count", "c", 1_000.0, 1.0),  # ties spot/b but for kind: gpu-count is built first
        rec("gpu-count", "b", 1_000.0, 1.0),  # ties gpu-count/c but for target
        rec("gpu-count", "b", 1_000.0, 1.0, change="gpu-count for team/b, container x"),  # ties all but change
        rec("mig", "z", 4_000.0, 1.0, pods=3),  # score 1000, expected 4000 > the others
        rec("spot", "a", 1_000.0 + 1e-9, 1.0),  # equal to the others on 6 places: summation noise does not rank it
    ]
    expected = [items[5], items[1], items[3], items[4], items[2], items[6], items[0]]
    for order in itertools.permutations(items):
        assert recommend.ranked(order, recommend.KINDS) == expected


def set_of(*items: recommend.Recommendation) -> recommend.RecommendationSet:
    return recommend.RecommendationSet(window=WINDOW, items=recommend.ranked(items, recommend.KINDS))


def test_readme_and_index_show_confidence_and_expected_savings() -> None:
    result = set_of(rec("gpu-count", "sweep", 40_000.0, 0.25, pods=1), rec("spot", "serve", 35_000.0, 1.0, pods=1))
    files = render(recommend.build_plan(result))
    index = json.loads(files["prod/index.json"])
    assert [
        (r["rank"], r["kind"], r["confidence"], r["expected_savings_usd_month"]) for r in index["recommendations"]
    ] == [
        (1, "spot", 1.0, 35_000.0),
        (2, "gpu-count", 0.25, 10_000.0),
    ]
    # different workloads, so both apply: the plan's total is their sum
    assert index["expected_savings_usd_month"] == 45_000.0 and index["savings_usd_month"] == 75_000.0
    assert index["ranking"]["score"] == "savings per month x confidence / (1 + pods restarted + 4 x nodes drained)"
    assert [r["score"] for r in index["recommendations"]] == [17_500.0, 5_000.0]

    readme = files["prod/README.md"]
    assert (
        "| rank | kind | target | change | savings / month (nodes removed) | if applied alone / month | confidence "
        "| expected / month |" in readme
    )
    assert (
        "| 1 | spot | prod / pool-a / team/serve | spot for team/serve | $35,000.00 | $35,000.00 | 1.00 | $35,000.00 "
        "| 1 |" in readme
    )
    assert (
        "| 2 | gpu-count | prod / pool-a / team/sweep | gpu-count for team/sweep | $40,000.00 | $40,000.00 | 0.25 "
        "| $10,000.00 |" in (readme)
    )
    assert "- Confidence: 0.25; expected savings $10,000.00 per month; score 5,000.00 (rank 2)" in readme


def test_report_lists_top_recommendations_with_confidence_in_rank_order(
    sim_warehouse: Path, settings: Settings
) -> None:
    lake = Lake(sim_warehouse)
    now = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    report = reporting.fleet_report(lake, settings, start=None, end=None, now=now, refresh=False)
    result = recommending.recommendations(lake, settings, start=None, end=None, now=now, refresh=False)
    window = Window(
        dt.datetime.fromisoformat(report["window"]["start"]), dt.datetime.fromisoformat(report["window"]["end"])
    )
    assert window == result.window
    top = report_sending.top_recommendations(lake, settings, window, now)
    applied = sorted((a for cp in recommending.plan(result).clusters for a in cp.applied), key=lambda a: a.rank)
    assert top, "the simulated fleet has a plan"
    assert [(t["kind"], t["confidence"]) for t in top] == [(a.rec.kind, a.rec.confidence) for a in applied]
    # the same figures, computed by two reads whose float sums may add in another order (last-bit differences)
    assert [t["expected_savings_usd_month"] for t in top] == pytest.approx(
        [a.expected_savings_usd_month for a in applied], rel=1e-9, abs=1e-6
    )
    assert [t["savings_usd_month_if_applied_alone"] for t in top] == pytest.approx(
        [a.rec.savings_usd_month for a in applied], rel=1e-9
    )
    ranks = [a.rank for a in applied]
    assert ranks == sorted(ranks)

    text = report_message(report, top, title="gpuledger weekly report", top_n=3).email["text"]
    lines = text.split("Top recommendations:", 1)[1].strip().splitlines()[: min(3, len(applied))]
    for line, a in zip(lines, applied[:3], strict=True):
        assert (
            f"${a.savings_usd_month:,.2f}/month on the bill, ${a.rec.savings_usd_month:,.2f} if applied alone" in line
        )
        assert f"confidence {a.rec.confidence:.2f}, expected ${a.expected_savings_usd_month:,.2f}/month" in line, line


@pytest.fixture
def page(settings: Settings, sim_warehouse: Path) -> Iterator[AppTest]:
    context.configure(sim_warehouse, Viewing(settings))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/recommendations.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    yield at
    context.reset()


def test_dashboard_table_shows_confidence_expected_savings_and_score(
    page: AppTest, sim_warehouse: Path, settings: Settings
) -> None:
    found = recommending.recommendations(
        Lake(sim_warehouse), settings, start=None, end=None, now=dt.datetime.now(dt.UTC), refresh=False
    )
    shown = {m.label: m.value for m in page.metric}
    plan = recommending.plan(found)
    assert shown["Expected plan savings per month"] == fmt.usd(
        sum(a.expected_savings_usd_month for c in plan.clusters for a in c.applied)
    )
    table: Any = page.dataframe[0].value
    columns = list(table.columns)
    assert {"confidence", "expected_usd_month", "score"} <= set(columns)
    assert list(table["confidence"]) == [r.to_dict()["confidence"] for r in found.items]
    assert list(table["expected_usd_month"]) == [r.to_dict()["expected_savings_usd_month"] for r in found.items]
