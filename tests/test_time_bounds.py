"""Samples stamped at an impossible time (before 2000, or more than a day ahead) are dropped on ingest, counted and
shown, and rows like them stored by an older release do not move the report's default window."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from dashboards import context
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from tests.conftest import T0, allocation_rows, sample_rows
from warehouse.ingest import RejectedTimes, append, append_many, conform, rejected_times
from warehouse.lake import Lake, Partition
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES

NOW = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)
Y2100 = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")


def clock() -> dt.datetime:
    return NOW


def with_bad_stamps(good: pa.Table, *stamps: dt.datetime) -> pa.Table:
    """``good`` plus one copy of its first row per stamp (another GPU, so no key collides)."""
    extra = pa.concat_tables([good.slice(0, 1)] * len(stamps))
    extra = extra.set_column(extra.schema.get_field_index("ts"), "ts", pa.array(stamps, good.schema.field("ts").type))
    extra = extra.set_column(extra.schema.get_field_index("gpu_uuid"), "gpu_uuid", pa.array(["GPU-bad"] * len(stamps)))
    return pa.concat_tables([good, extra])


def test_rows_outside_2000_to_a_day_ahead_are_dropped_counted_and_logged(
    lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    batch = with_bad_stamps(sample_rows(), Y2100, EPOCH)
    with caplog.at_level(logging.WARNING, logger="warehouse.ingest"):
        result = append(lake, GPU_SAMPLES, batch, clock=clock)
    assert (result.rows_in, result.rows_written, result.rows_rejected, result.rows_skipped) == (12, 10, 2, 0)
    stored = lake.scan(GPU_SAMPLES).collect()
    assert stored.height == 10
    assert set(stored["gpu_uuid"]) == {"GPU-a"}
    assert caplog.messages == [
        "gpu_samples: dropped 2 row(s) stamped outside 2000-01-01T00:00:00+00:00 .. 2026-11-04T12:00:00+00:00 "
        "(impossible timestamps, 1970-01-01T00:00:00+00:00 .. 2100-01-01T00:00:00+00:00); the rest of the batch "
        "is stored"
    ]
    assert rejected_times(lake) == RejectedTimes(
        rows=2, last_rejected_at=NOW, earliest_stamp=EPOCH, latest_stamp=Y2100, by_table={"gpu_samples": 2}
    )


def test_the_bounds_are_inclusive_and_judged_against_the_injected_clock(lake: Lake) -> None:
    edge = [dt.datetime(2000, 1, 1, tzinfo=dt.UTC), NOW + dt.timedelta(days=1)]
    beyond = [edge[0] - dt.timedelta(microseconds=1), edge[1] + dt.timedelta(microseconds=1)]
    batch = with_bad_stamps(sample_rows(), *edge, *beyond)
    result = append(lake, GPU_SAMPLES, batch, clock=clock)
    assert (result.rows_written, result.rows_rejected) == (12, 2)
    later = append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-b", start=beyond[1]), clock=lambda: NOW + dt.timedelta(1))
    assert later.rows_rejected == 0


def test_the_count_runs_on_across_batches_and_tables(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, with_bad_stamps(sample_rows(), Y2100), clock=clock)
    later = NOW + dt.timedelta(hours=1)
    results = append_many(
        lake,
        [
            (GPU_SAMPLES, with_bad_stamps(sample_rows(gpu="GPU-b"), EPOCH, EPOCH + dt.timedelta(seconds=1))),
            (GPU_ALLOCATIONS, with_bad_stamps(allocation_rows(), Y2100 + dt.timedelta(days=400))),
        ],
        clock=lambda: later,
    )
    assert [r.rows_rejected for r in results] == [2, 1]
    assert rejected_times(lake) == RejectedTimes(
        rows=4,
        last_rejected_at=later,
        earliest_stamp=EPOCH,
        latest_stamp=Y2100 + dt.timedelta(days=400),
        by_table={"gpu_samples": 3, "gpu_allocations": 1},
    )
    state = json.loads((lake.root / "_state" / "rejected-timestamps.json").read_text())
    assert state["rows"] == 4


def test_a_batch_of_only_impossible_rows_writes_no_part_but_is_counted(lake: Lake) -> None:
    batch = with_bad_stamps(sample_rows(), Y2100).slice(10)
    result = append(lake, GPU_SAMPLES, batch, clock=clock)
    assert (result.rows_written, result.parts, result.rows_rejected) == (0, 0, 1)
    assert lake.parts(GPU_SAMPLES) == []
    found = rejected_times(lake)
    assert found is not None and found.rows == 1


def test_a_warehouse_that_never_rejected_reports_none(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(), clock=clock)
    assert rejected_times(lake) is None
    assert not (lake.root / "_state" / "rejected-timestamps.json").exists()


def store_unchecked(lake: Lake, row: pa.Table) -> None:
    """Write one sample as an older release did: straight into its partition, no timestamp check."""
    [(stamp, cluster)] = zip(row["ts"].to_pylist(), row["cluster"].to_pylist(), strict=True)
    with lake.writing():
        lake.commit([lake.stage(GPU_SAMPLES, Partition(stamp.date(), cluster), conform(GPU_SAMPLES, row))])


@pytest.mark.parametrize("same_series", [False, True], ids=["another-cluster", "the-same-gpu"])
def test_stored_impossible_rows_move_neither_the_window_nor_the_rollup(cli, lake: Lake, same_series: bool) -> None:
    """Rows an older release stored in 2100 and 1970, in another cluster or on the very GPU that has the real data:
    the default window is the real data's, and the rollup covers the real day only (it once walked every day from
    the GPU's first to its last stored sample: ~47,000 partitions)."""
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(0, 1440)))
    gpu, cluster = ("GPU-a", "c1") if same_series else ("GPU-bad", "c2")
    real = sample_rows(minutes=range(1))
    for stamp in (Y2100, EPOCH):
        row = sample_rows(gpu=gpu, minutes=range(1), start=stamp, cluster=cluster)
        assert not same_series or row["gpu_uuid"].equals(real["gpu_uuid"]), "the planted row must share the GPU"
        store_unchecked(lake, row)
    result = cli("report", "--warehouse", str(lake.root), "--format", "json")
    assert result.exit_code == 0, result.output
    window = json.loads(result.stdout)["window"]
    end = T0 + dt.timedelta(minutes=1440)
    assert window == {"start": (end - dt.timedelta(days=7)).isoformat(), "end": end.isoformat()}
    days = {p.date for p in lake.partitions(GPU_MINUTES)}
    assert days == {T0.date()}


@pytest.fixture
def app(settings: Settings) -> Iterator[Callable[[Path], AppTest]]:
    def make(warehouse: Path) -> AppTest:
        context.configure(warehouse, Viewing(settings))
        return AppTest.from_file(APP, default_timeout=60)

    yield make
    context.reset()


def test_the_data_health_page_shows_the_rejected_count(
    app: Callable[[Path], AppTest], sim_warehouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    lake = Lake(root)
    at = app(root)
    at.run()
    at.switch_page("views/data_health.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not any("impossible timestamps" in w.value for w in at.warning)

    stamp = dt.datetime(2026, 11, 20, 6, 30, tzinfo=dt.UTC)
    batch = with_bad_stamps(sample_rows(gpu="GPU-x", start=stamp), Y2100, Y2100 + dt.timedelta(hours=1), EPOCH)
    append(lake, GPU_SAMPLES, batch.slice(10), clock=lambda: stamp)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    [shown] = [w.value for w in at.warning if "impossible timestamps" in w.value]
    assert shown.startswith(
        "3 samples rejected for impossible timestamps (last on 2026-11-20 06:30 UTC): stamped 1970-01-01 00:00 UTC "
        "to 2100-01-01 01:00 UTC"
    )
