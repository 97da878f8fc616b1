"""Underused GPU-time and the reconciliation with OpenCost and Kubecost (``analysis.reconcile``): golden answers on
hand-made minutes with hand-computed dollars, and the report, its JSON, markdown and HTML on a small simulated fleet.

The hand-made fleet, one hour each unless said (H100 on-demand node $6.88 per GPU-hour, spot node $3.00):

- GPU-a: active at 6% (sm_active 0.06, util_pct 100), held by team-a: 0.94 GPU-hours underused, $6.4672;
- GPU-b: active at 50%, time-sliced by team-a (SM share 0.75) and team-b (0.25);
- GPU-c (spot): unallocated;
- GPU-d: 30 minutes of no_data;
- GPU-e (spot): idle_held at 2% by team-b.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import Result

from analysis import daily, reconcile, usage
from analysis.costs import priced
from analysis.shares import SHARES_DTYPE
from analysis.window import Window
from gpuledger import jobs
from gpuledger.settings import Settings
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES

WINDOW = Window(T0, T0 + dt.timedelta(days=1))
OD, SPOT = 6.88, 3.0
NODE_PRICES = pl.DataFrame(
    {
        "cluster": ["c1", "c1"],
        "node": ["n-od", "n-spot"],
        "date": [T0.date(), T0.date()],
        "usd_per_gpu_hour": [OD, SPOT],
        "price_source": ["AWS on-demand", "AWS spot estimate"],
        "price_fallback": [False, False],
    }
)
MODEL_PRICES = pl.DataFrame(
    {
        "gpu_model": ["NVIDIA H100 80GB HBM3"],
        "usd_per_gpu_hour": [5.0],
        "price_source": ["model"],
        "price_fallback": [True],
    }
)
Holder = tuple[str, str, float]
"""(namespace, workload, share) of a shared minute."""


def gpu(
    name: str,
    node: str,
    state: str,
    count: int,
    *,
    util: float | None,
    sm: float | None = None,
    held: tuple[str, str] | None = None,
    shared: list[Holder] | None = None,
) -> list[dict[str, Any]]:
    """``count`` classified GPU-minutes of one GPU, as the rollup stores them (with ``split_method`` and
    ``holder_shares`` when several pods held it)."""
    namespace, workload = (shared[0][0], shared[0][1]) if shared else (held or (None, None))
    shares = (
        [{"namespace": n, "pod": f"{w}-0", "container": "main", "workload": w, "share": s} for n, w, s in shared]
        if shared
        else None
    )
    return [
        {
            "ts": T0 + dt.timedelta(minutes=i),
            "cluster": "c1",
            "node": node,
            "gpu_uuid": name,
            "mig_profile": None,
            "mig_instance_id": None,
            "gpu_model": "NVIDIA H100 80GB HBM3",
            "util_mean_pct": util,
            "sm_active_mean": sm,
            "fb_used_max_bytes": 8 << 30,
            "namespace": namespace,
            "pod": f"{workload}-0" if workload else None,
            "container": "main" if workload else None,
            "workload": workload,
            "state": state,
            "split_method": "sm share" if shared else None,
            "holder_shares": shares,
        }
        for i in range(count)
    ]


def priced_groups(rows: list[dict[str, Any]]) -> pl.DataFrame:
    schema: dict[str, Any] = {
        "ts": pl.Datetime("us", "UTC"),
        "mig_profile": pl.String,
        "mig_instance_id": pl.Int32,
        "util_mean_pct": pl.Float32,
        "sm_active_mean": pl.Float32,
        "fb_used_max_bytes": pl.Int64,
        "namespace": pl.String,
        "pod": pl.String,
        "container": pl.String,
        "workload": pl.String,
        "split_method": pl.String,
        "holder_shares": SHARES_DTYPE,
    }
    minutes = pl.DataFrame(rows, schema_overrides=schema).lazy()
    return priced(usage.minute_groups(minutes, WINDOW, []).collect(), NODE_PRICES, MODEL_PRICES)


SIX_PCT = gpu("GPU-a", "n-od", "active", 60, util=100.0, sm=0.06, held=("team-a", "train"))
SHARED = gpu("GPU-b", "n-od", "active", 60, util=50.0, shared=[("team-a", "train", 0.75), ("team-b", "serve", 0.25)])
UNALLOCATED = gpu("GPU-c", "n-spot", "unallocated", 60, util=0.0)
NO_DATA = gpu("GPU-d", "n-od", "no_data", 30, util=None)
IDLE_HELD = gpu("GPU-e", "n-spot", "idle_held", 60, util=2.0, held=("team-b", "serve"))
FLEET = SIX_PCT + SHARED + UNALLOCATED + NO_DATA + IDLE_HELD


def lines(walk: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {f"{line['kind']}: {line['line']}": (line["gpu_hours"], line["cost_usd"]) for line in walk["lines"]}


def test_an_active_gpu_at_6_percent_is_94_percent_underused() -> None:
    got = reconcile.underused(priced_groups(SIX_PCT))
    assert got["gpu_hours"] == pytest.approx(0.94, abs=1e-4)  # sm_active (6%), not util_pct (100%), as the states
    assert got["cost_usd"] == pytest.approx(round(0.94 * OD, 2))  # $6.47
    assert got["share_of_active"] == pytest.approx(0.94)
    assert got["price_sources"] == [
        {"price_source": "AWS on-demand", "price_fallback": False, "gpu_hours": 0.94, "cost_usd": 6.47}
    ]
    assert "active GPU-time x (1 - utilization)" in got["definition"]


def test_idle_unallocated_and_no_data_time_is_not_underused() -> None:
    got = reconcile.underused(priced_groups(UNALLOCATED + NO_DATA + IDLE_HELD))
    assert (got["gpu_hours"], got["cost_usd"], got["share_of_active"]) == (0.0, 0.0, None)


def test_a_shared_gpu_is_underused_once_and_split_between_its_holders() -> None:
    got = reconcile.reconciliation(priced_groups(SHARED))
    assert reconcile.underused(priced_groups(SHARED))["cost_usd"] == pytest.approx(0.5 * OD)
    by_ns = {r["namespace"]: r for r in got["by_namespace"]}
    assert by_ns["team-a"]["underused_usd"] == pytest.approx(round(0.375 * OD, 2))
    assert by_ns["team-b"]["underused_usd"] == pytest.approx(round(0.125 * OD, 2))


def test_opencost_allocated_plus_unallocated_plus_no_data_is_the_fleet_cost() -> None:
    got = reconcile.reconciliation(priced_groups(FLEET))
    cost = lines(got["cost"])
    assert cost["start: OpenCost: GPU cost allocated to pods (GPU requests x hours x price)"] == pytest.approx(
        (3.0, 2 * OD + SPOT), abs=0.005
    )
    assert cost["of which: active (gpuledger: used + underused)"] == pytest.approx((2.0, 2 * OD), abs=0.005)
    assert cost["of which: idle held: pods held the GPU below the active threshold"] == pytest.approx(
        (1.0, SPOT), abs=0.005
    )
    assert cost["plus: unallocated time: no pod held the GPU"] == pytest.approx((1.0, SPOT), abs=0.005)
    assert cost["plus: no data: nobody observed the GPU"] == pytest.approx((0.5, 0.5 * OD), abs=0.005)
    assert cost["equals: gpuledger: fleet cost"] == pytest.approx((4.5, 23.2), abs=0.005)
    # team-a is charged 0.5 h of the shared hour by request, 0.75 h by measured use: $1.72 changes namespace
    assert cost["moved: shared GPUs: charged by request in OpenCost, by measured use in gpuledger"] == pytest.approx(
        (1.0, 1.72), abs=0.005
    )
    assert got["cost"]["adds_up"]
    starts = [line for line in got["cost"]["lines"] if line["kind"] in ("start", "plus")]
    assert sum(line["cost_usd"] for line in starts) == pytest.approx(23.2)


def test_kubecost_workload_idle_plus_named_differences_is_idle_waste_plus_underused() -> None:
    got = reconcile.reconciliation(priced_groups(FLEET))
    idle = lines(got["idle"])
    kubecost = 0.94 * OD + 0.98 * SPOT  # GPU-a's (1 - 6%) and GPU-e's (1 - 2%); the shared GPU-b counts $0
    assert idle["start: Kubecost: workload idle ((request - usage) x price), shared GPUs at $0"][1] == pytest.approx(
        round(kubecost, 2)
    )
    assert idle["plus: use below the active threshold on idle pod minutes"] == pytest.approx((0.02, 0.06), abs=0.005)
    assert idle["plus: shared GPUs"] == pytest.approx((0.5, round(0.5 * OD, 2)), abs=0.005)
    assert idle["plus: unallocated time: no pod held the GPU"] == pytest.approx((1.0, SPOT), abs=0.005)
    idle_waste, underused = SPOT + SPOT, 0.94 * OD + 0.5 * OD
    assert idle["of which: idle waste (idle_held + idle_allocated + unallocated)"] == pytest.approx(
        (2.0, idle_waste), abs=0.005
    )
    assert idle["of which: underused (active GPU-time x (1 - utilization))"][1] == pytest.approx(round(underused, 2))
    total = idle["equals: gpuledger: idle waste + underused"][1]
    assert total == pytest.approx(round(idle_waste + underused, 2))
    assert got["idle"]["adds_up"]
    steps = [line["cost_usd"] for line in got["idle"]["lines"] if line["kind"] in ("start", "plus")]
    assert sum(steps) == pytest.approx(total, abs=0.01)


def test_by_namespace_opencost_charges_the_shared_gpu_by_request_and_gpuledger_by_use() -> None:
    got = {r["namespace"]: r for r in reconcile.reconciliation(priced_groups(FLEET))["by_namespace"]}
    assert got["team-a"] | {"gpu_hours": pytest.approx(1.75)} == {
        "namespace": "team-a",
        "gpu_hours": pytest.approx(1.75),
        "opencost_usd": round(OD + 0.5 * OD, 2),
        "gpuledger_usd": round(OD + 0.75 * OD, 2),
        "shared_difference_usd": 1.72,
        "kubecost_idle_usd": round(0.94 * OD, 2),
        "gpuledger_idle_usd": round(0.94 * OD + 0.375 * OD, 2),
        "underused_usd": round(0.94 * OD + 0.375 * OD, 2),
        "split_by": "sm share",
    }
    assert got["team-b"]["opencost_usd"] == round(0.5 * OD + SPOT, 2)
    assert got["team-b"]["gpuledger_usd"] == round(0.25 * OD + SPOT, 2)
    assert got["team-b"]["kubecost_idle_usd"] == round(0.98 * SPOT, 2)
    assert sum(r["shared_difference_usd"] for r in got.values()) == pytest.approx(0.0)
    assert sum(r["opencost_usd"] for r in got.values()) == pytest.approx(2 * OD + SPOT)


def test_gpu_processes_outside_pods_are_unallocated_time_for_opencost() -> None:
    outside = gpu("GPU-f", "n-od", "active", 60, util=50.0, held=(rollup.OUTSIDE_PODS, "python3"))
    got = lines(reconcile.reconciliation(priced_groups(outside), (0.0, 0.0))["cost"])
    assert got["of which: GPU processes outside pods"] == pytest.approx((1.0, OD), abs=0.005)
    assert got["start: OpenCost: GPU cost allocated to pods (GPU requests x hours x price)"] == pytest.approx(
        (0.0, 0.0), abs=0.005
    )


def test_silent_gpus_are_named_inside_no_data() -> None:
    got = lines(reconcile.reconciliation(priced_groups(NO_DATA), (0.25, 1.72))["cost"])
    assert got["of which: GPUs that never reported"] == pytest.approx((0.25, 1.72), abs=0.005)
    assert got["plus: no data: nobody observed the GPU"] == pytest.approx((0.5, 0.5 * OD), abs=0.005)


def test_summaries_stored_before_request_hours_are_recomputed(
    lake: Lake, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Daily minute groups stored by the previous summary version lack ``request_hours``: the version is part of
    their fingerprint, so they are stale and the next rollup stores them anew."""
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(30), util=80.0))
    append(lake, GPU_ALLOCATIONS, allocation_rows(minutes=range(30)))

    def before(minutes: pl.LazyFrame, window: Window, mig_parents: list[str]) -> pl.LazyFrame:
        return usage.minute_groups(minutes, window, mig_parents).drop("request_hours")

    current = daily.DailySummaries.for_assumptions(settings.mig_assumptions)
    old = dataclasses.replace(current, groups=daily.UsagePass("minute_groups", before))
    with monkeypatch.context() as patch:
        patch.setattr(daily, "VERSION", "2")
        rollup.refresh(lake, settings.state_rules, settings.rollup, summaries=old.all())
    assert not rollup.is_fresh(lake, settings.state_rules, settings.rollup, settings.summaries.all())
    jobs.refresh(lake, settings)
    stored = pl.concat([pl.read_parquet(p) for p in lake.parts(rollup.summary_table(settings.summaries.groups))])
    assert stored["request_hours"].sum() == pytest.approx(0.5)


@pytest.fixture(scope="module")
def sim_report(sim_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Result]:
    from click.testing import CliRunner

    from gpuledger.cli import main

    root = tmp_path_factory.mktemp("reconcile") / "wh"
    shutil.copytree(sim_warehouse, root)

    def run(fmt: str) -> Result:
        result = CliRunner().invoke(main, ["report", "--warehouse", str(root), "--format", fmt], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    return run


def test_the_report_json_reconciles_on_a_simulated_fleet(sim_report: Callable[[str], Result]) -> None:
    report = json.loads(sim_report("json").stdout)
    fleet, states, costs = report["fleet"], report["states"], report["states_cost_usd"]
    underused, rec = report["underused"], report["reconciliation"]
    assert 0 < underused["cost_usd"] < costs["active"]
    assert 0 < underused["gpu_hours"] < states["active"]
    assert sum(s["cost_usd"] for s in underused["price_sources"]) == pytest.approx(underused["cost_usd"], abs=0.05)
    for part in ("cost", "idle"):
        walk = rec[part]
        assert walk["adds_up"], part
        equals = next(line for line in walk["lines"] if line["kind"] == "equals")
        steps = [line for line in walk["lines"] if line["kind"] in ("start", "plus")]
        assert sum(line["cost_usd"] for line in steps) == pytest.approx(equals["cost_usd"], abs=0.05)
        assert sum(line["gpu_hours"] for line in steps) == pytest.approx(equals["gpu_hours"], abs=1e-3)
    cost = {line["kind"]: line for line in rec["cost"]["lines"]}
    assert cost["equals"]["cost_usd"] == pytest.approx(fleet["cost_usd"], abs=0.01)
    idle_total = next(line for line in rec["idle"]["lines"] if line["kind"] == "equals")["cost_usd"]
    assert idle_total == pytest.approx(report["idle_waste"]["cost_usd"] + underused["cost_usd"], abs=0.02)
    opencost = sum(r["opencost_usd"] for r in rec["by_namespace"])
    assert opencost == pytest.approx(cost["start"]["cost_usd"], abs=0.01 * len(rec["by_namespace"]))


def test_markdown_and_html_show_underuse_and_the_reconciliation(sim_report: Callable[[str], Result]) -> None:
    markdown = sim_report("md").stdout
    assert "- Underused GPU-hours: **" in markdown and "(active GPU-time x (1 - utilization))" in markdown
    for title in (
        "## Reconciliation: OpenCost's GPU cost to the fleet cost",
        "## Reconciliation: Kubecost's workload idle to idle waste + underused",
        "## Reconciliation by namespace",
    ):
        assert title in markdown
    assert "| = | gpuledger: fleet cost |" in markdown
    assert "does not add up" not in markdown
    assert "Kubecost's workload idle = (request - usage) x price" in markdown
    page = sim_report("html").stdout
    assert "<h2>Reconciliation: OpenCost&#x27;s GPU cost to the fleet cost</h2>" in page
    assert "Underused GPU-hours: <b>" in page


def test_the_slack_summary_gives_underused_dollars(sim_report: Callable[[str], Result]) -> None:
    from alerts.report import report_message

    report = json.loads(sim_report("json").stdout)
    slack = report_message(report, [], title="GPU report").slack
    fields = [f["text"] for block in slack["blocks"] for f in block.get("fields", [])]
    want = f"*Underused*\n${report['underused']['cost_usd']:,.2f}"
    assert any(f.startswith(want) for f in fields), fields
