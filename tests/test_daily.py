"""Daily summaries: a report added up from stored days equals one computed from the minutes, and a summary that no
longer matches its minutes or its settings is never used."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis import daily, timeline, usage
from analysis.window import Window
from gpuledger import jobs, reporting
from gpuledger.settings import Settings
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import SUMMARIES_DIR, Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


@pytest.fixture
def sim_copy(sim_warehouse: Path, tmp_path: Path) -> Lake:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    return Lake(root)


def _report(lake: Lake, settings: Settings, start: str | None) -> dict:
    return reporting.fleet_report(lake, settings, start=start, end=None, now=NOW, refresh=False)


def assert_same_report(got: Any, want: Any, path: str = "") -> None:
    """Equal, except that a float may differ in its last rounded digit: sums in another order (days added up, or
    polars' parallel group-by) can move a value across a rounding boundary (48.09375 -> 48.0937 or 48.0938)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for key in want:
            assert_same_report(got[key], want[key], f"{path}/{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_report(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and isinstance(got, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=0.01), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.mark.parametrize("start", [None, "2000-01-01", "2026-11-18T07:31:00"])
def test_report_from_stored_days_equals_report_from_minutes(sim_copy: Lake, settings: Settings, start) -> None:
    stored = list((sim_copy.root / SUMMARIES_DIR).rglob("*.parquet"))
    # the simulate job stored every summary of every day
    assert len(stored) == len(settings.summaries.all()) * len(sim_copy.parts(GPU_MINUTES))
    from_days = _report(sim_copy, settings, start)
    shutil.rmtree(sim_copy.root / SUMMARIES_DIR)
    assert_same_report(_report(sim_copy, settings, start), from_days)


def test_stacked_days_equal_one_pass_over_the_window(sim_copy: Lake, settings: Settings) -> None:
    window = Window(dt.datetime(2026, 11, 17, 13, 5, tzinfo=dt.UTC), dt.datetime(2026, 11, 19, 22, 0, tzinfo=dt.UTC))
    minutes = sim_copy.scan(GPU_MINUTES, start=window.start, end=window.end)
    one_pass = usage.minute_groups(minutes, window, []).collect()
    stacked = rollup.summarized(sim_copy, daily.MINUTE_GROUPS, window.start, window.end)
    keys = usage.GROUP_KEYS
    assert_frame_equal(
        stacked.sort(keys, nulls_last=True), one_pass.sort(keys, nulls_last=True), check_row_order=True, rel_tol=1e-5
    )
    histogram = daily.add_up_histogram(rollup.summarized(sim_copy, daily.BUSY_HISTOGRAM, window.start, window.end))
    expected = usage.busy_histogram(minutes, window, []).collect()
    cells = ["namespace", "gpu_model", "busy", "weekday", "hour", "held"]
    assert_frame_equal(
        histogram.sort(cells, nulls_last=True), expected.sort(cells, nulls_last=True), check_dtypes=False, rel_tol=1e-5
    )


@pytest.mark.parametrize("every", ["1h", "6h", "1d"])
def test_stored_hours_rebucket_to_the_one_pass_timeline(sim_copy: Lake, every: str) -> None:
    window = Window(dt.datetime(2026, 11, 17, 9, 30, tzinfo=dt.UTC), dt.datetime(2026, 11, 19, 20, 0, tzinfo=dt.UTC))
    minutes = sim_copy.scan(GPU_MINUTES, start=window.start, end=window.end)
    one_pass = timeline.gpu_buckets(minutes, window, [], every).collect()
    stored = timeline.rebucket(rollup.summarized(sim_copy, daily.GPU_TIMELINE, window.start, window.end), every)
    keys = ["bucket", *timeline.GPU_KEYS, "namespace", "state"]
    assert_frame_equal(
        stored.select(one_pass.columns).sort(keys, nulls_last=True),
        one_pass.sort(keys, nulls_last=True),
        rel_tol=1e-5,
    )


def test_changed_mig_settings_recompute_only_the_mig_summaries(sim_copy: Lake, settings: Settings) -> None:
    assert rollup.is_fresh(sim_copy, settings.state_rules, settings.rollup, settings.summaries.all())
    slower = settings.model_copy(update={"mig_half_life_hours": 48.0})
    assert not rollup.is_fresh(sim_copy, slower.state_rules, slower.rollup, slower.summaries.all())
    before = {p.name for p in (sim_copy.root / SUMMARIES_DIR / "minute_groups").rglob("*.parquet")}
    result = jobs.refresh(sim_copy, slower)
    assert result.computed == 0  # the minutes themselves did not change
    assert {p.name for p in (sim_copy.root / SUMMARIES_DIR / "minute_groups").rglob("*.parquet")} == before
    assert rollup.is_fresh(sim_copy, slower.state_rules, slower.rollup, slower.summaries.all())
    with_stored = _report(sim_copy, slower, "2000-01-01")
    shutil.rmtree(sim_copy.root / SUMMARIES_DIR)
    assert_same_report(_report(sim_copy, slower, "2000-01-01"), with_stored)


def test_a_summary_of_replaced_minutes_is_not_read(lake: Lake, settings: Settings) -> None:
    """New samples for a day recompute its minutes; the old day's summary no longer matches and is dropped."""
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(30), util=80.0))
    append(lake, GPU_ALLOCATIONS, allocation_rows(minutes=range(30)))
    jobs.refresh(lake, settings)
    first = _report(lake, settings, "2026-11-02")
    assert first["states"]["active"] == pytest.approx(0.5)
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(30, 90), util=0.0, fb_used=0))
    jobs.refresh(lake, settings)
    visible = [p for s in settings.summaries.all() for p in lake.parts(rollup.summary_table(s))]
    assert len(visible) == len(settings.summaries.all())  # one per summary: the replaced day's old ones are retired
    with Lake(lake.root, retire_grace_s=0).writing():
        pass  # past the grace period the next writer unlinks retired files
    stored = list((lake.root / SUMMARIES_DIR).rglob("*.parquet"))
    assert sorted(stored) == sorted(visible)
    second = _report(lake, settings, "2026-11-02")
    assert second["states"]["active"] == pytest.approx(0.5)
    # the hour of new samples: unallocated, except the minute the last allocation still covers (idle_allocated)
    assert second["states"]["unallocated"] + second["states"]["idle_allocated"] == pytest.approx(1.0)
    assert second["states"]["unallocated"] == pytest.approx(59 / 60, abs=1e-4)  # the report rounds to 4 places


def test_a_mig_gpu_counts_its_instances_on_the_days_they_exist(lake: Lake, settings: Settings) -> None:
    """Day 1: a whole GPU; day 2: the same GPU cut into a 3g instance. Each day's GPU-hours are what that day had."""
    day2 = T0 + dt.timedelta(days=1)
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(60), util=50.0))
    parent = sample_rows(minutes=range(60), start=day2, util=0.0)
    instance = sample_rows(minutes=range(60), start=day2, util=70.0)
    instance = instance.append_column("mig_profile", pl.Series(["3g.71gb"] * 60).to_arrow()).append_column(
        "mig_instance_id", pl.Series([1] * 60, dtype=pl.Int32).to_arrow()
    )
    append(lake, GPU_SAMPLES, parent)
    append(lake, GPU_SAMPLES, instance)
    jobs.refresh(lake, settings)
    days = rollup.summarized(lake, daily.MINUTE_GROUPS, T0, T0 + dt.timedelta(days=2))
    hours = dict(days.group_by("date").agg(pl.col("observed_hours").sum()).iter_rows())
    # the whole GPU before it was cut: 60 sampled minutes and the one its last sample still covers (max_gap)
    assert hours[T0.date()] == pytest.approx(61 / 60)
    assert hours[day2.date()] == pytest.approx(3 / 7)  # only the 3g instance counts; the parent weighs 0


def test_an_unreadable_summary_is_recomputed_not_fatal(sim_copy: Lake, settings: Settings, caplog) -> None:
    want = _report(sim_copy, settings, "2000-01-01")
    broken = sorted((sim_copy.root / SUMMARIES_DIR / "minute_groups").rglob("*.parquet"))[1]
    broken.write_bytes(b"not parquet")
    assert_same_report(_report(sim_copy, settings, "2000-01-01"), want)
    assert "unreadable" in caplog.text and broken.name in caplog.text


def test_a_retired_summary_is_removed_by_the_next_rollup(sim_copy: Lake, settings: Settings) -> None:
    retired = sim_copy.root / SUMMARIES_DIR / "gpu_timeline" / "date=2026-11-18" / "cluster=c1"
    retired.mkdir(parents=True)
    (retired / "part-0123456789abcdef0123.parquet").write_bytes(b"an older version's summary")
    jobs.refresh(sim_copy, settings)
    assert not sim_copy.parts(rollup.summary_table_named("gpu_timeline"))
    with Lake(sim_copy.root, retire_grace_s=0).writing():
        pass  # past the grace period the next writer unlinks retired files
    assert not list((sim_copy.root / SUMMARIES_DIR / "gpu_timeline").rglob("*.parquet"))
    assert (sim_copy.root / SUMMARIES_DIR / "minute_groups").is_dir()
