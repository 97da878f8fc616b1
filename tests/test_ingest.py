"""Appending: the table contract is enforced, and re-ingesting the same data changes nothing."""

from __future__ import annotations

import datetime as dt
import itertools

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from tests.conftest import T0, allocation_rows, sample_rows
from warehouse.errors import SchemaViolation
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES


def stored(lake: Lake, table=GPU_SAMPLES) -> pl.DataFrame:
    return lake.scan(table).collect().sort("gpu_uuid", "ts")


def test_reappending_the_same_rows_changes_no_count_and_no_value(lake: Lake) -> None:
    batch = sample_rows(minutes=range(0, 3000, 7))  # spans three dates
    first = append(lake, GPU_SAMPLES, batch)
    before = stored(lake)
    again = append(lake, GPU_SAMPLES, batch)
    assert (first.rows_written, again.rows_written, again.parts) == (batch.num_rows, 0, 0)
    assert_frame_equal(stored(lake), before)
    assert {p.date for p in lake.partitions(GPU_SAMPLES)} == {
        dt.date(2026, 11, 2),
        dt.date(2026, 11, 3),
        dt.date(2026, 11, 4),
    }


def test_stored_row_wins_over_a_changed_value_with_the_same_key(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=10.0))
    result = append(lake, GPU_SAMPLES, sample_rows(util=90.0))
    assert result.rows_written == 0
    assert stored(lake)["util_pct"].unique().to_list() == [10.0]


def test_overlapping_batch_adds_only_new_rows(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(minutes=range(0, 10)))
    result = append(lake, GPU_SAMPLES, sample_rows(minutes=range(5, 15)))
    assert (result.rows_in, result.rows_written) == (10, 5)
    assert stored(lake).height == 15


def test_duplicates_inside_one_batch_are_stored_once(lake: Lake) -> None:
    batch = pa.concat_tables([sample_rows(), sample_rows()])
    assert append(lake, GPU_SAMPLES, batch).rows_written == 10


def test_mig_instances_are_distinct_keys_and_null_mig_ids_dedupe(lake: Lake) -> None:
    whole = sample_rows(gpu="GPU-m")
    mig = whole.append_column("mig_instance_id", pa.array([3] * whole.num_rows, pa.int32()))
    append(lake, GPU_SAMPLES, whole)
    append(lake, GPU_SAMPLES, mig)
    append(lake, GPU_SAMPLES, whole)
    append(lake, GPU_SAMPLES, mig)
    assert stored(lake).group_by("mig_instance_id").len().sort("mig_instance_id", nulls_last=True)["len"].to_list() == [
        10,
        10,
    ]


def _with(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(column), column, values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda t: _with(t, "util_pct", pa.array(["high"] * t.num_rows)),
            "gpu_samples.util_pct: expected float, got string; nothing of this batch was written",
        ),
        (
            lambda t: _with(t, "gpu_uuid", pa.array(["GPU-a"] * (t.num_rows - 1) + [None], pa.string())),
            "gpu_samples.gpu_uuid: 1 row(s) have no value (required); nothing of this batch was written",
        ),
        (
            lambda t: _with(t, "fb_used_bytes", pa.array([1] * (t.num_rows - 1) + [-5], pa.int64())),
            "gpu_samples.fb_used_bytes: value -5 is below 0; nothing of this batch was written",
        ),
        (
            lambda t: _with(t, "util_pct", pa.array([50.0] * (t.num_rows - 1) + [101.0], pa.float32())),
            "gpu_samples.util_pct: value 101.0 is above 100.0; nothing of this batch was written",
        ),
        (
            lambda t: _with(t, "util_pct", pa.array([50.0] * (t.num_rows - 1) + [float("nan")], pa.float32())),
            "gpu_samples.util_pct: 1 row(s) are NaN; nothing of this batch was written",
        ),
        (
            lambda t: t.drop_columns(["ts"]),
            "gpu_samples.ts: required column is missing; nothing of this batch was written",
        ),
        (
            lambda t: t.append_column("fan_rpm", pa.array([1] * t.num_rows)),
            "gpu_samples.fan_rpm: unknown column (the table has ts, cluster, node, gpu_uuid, gpu_index, mig_profile, "
            "mig_instance_id, gpu_model, util_pct, sm_active, fb_used_bytes, fb_total_bytes, power_w, energy_j, "
            "temp_c, sm_clock_mhz, clock_event_reasons, source); nothing of this batch was written",
        ),
        (
            lambda t: _with(t, "source", pa.array(["guess"] * t.num_rows)),
            "gpu_samples.source: 'guess' is not one of nvml, dcgm-exporter, prometheus, simulator; "
            "nothing of this batch was written",
        ),
    ],
)
def test_schema_violations_name_the_column_and_write_nothing(lake: Lake, change, message: str) -> None:
    append(lake, GPU_SAMPLES, sample_rows(gpu="GPU-kept"))
    before = stored(lake)
    bad = change(sample_rows(minutes=range(0, 3000, 7)))  # would touch three partitions
    with pytest.raises(SchemaViolation) as caught:
        append(lake, GPU_SAMPLES, bad)
    assert str(caught.value) == message
    assert_frame_equal(stored(lake), before)
    assert len(lake.parts(GPU_SAMPLES)) == 1


def test_allocation_without_pod_or_pid_is_rejected(lake: Lake) -> None:
    rows = allocation_rows()
    rows = _with(rows, "pod", pa.nulls(rows.num_rows, pa.string()))
    with pytest.raises(SchemaViolation, match=r"gpu_allocations.pod/pid: 10 row\(s\) name no holder"):
        append(lake, GPU_ALLOCATIONS, rows)


def test_naive_timestamps_are_taken_as_utc(lake: Lake) -> None:
    rows = sample_rows(minutes=range(2))
    naive = rows.column("ts").cast(pa.timestamp("us"))
    append(lake, GPU_SAMPLES, _with(rows, "ts", naive))
    assert stored(lake)["ts"].to_list() == [T0, T0 + dt.timedelta(minutes=1)]


def test_nodes_partition_by_date_and_dedupe_on_cluster_node_date(lake: Lake) -> None:
    rows = pa.table(
        {
            "date": [dt.date(2026, 11, 2), dt.date(2026, 11, 3)],
            "cluster": ["c1", "c1"],
            "node": ["n1", "n1"],
            "capacity_type": ["spot", "spot"],
            "gpu_count": pa.array([8, 8], pa.int32()),
        }
    )
    append(lake, NODES, rows)
    assert append(lake, NODES, rows).rows_written == 0
    assert lake.scan(NODES).collect().height == 2
    # a row stands for its whole day: a window inside 2026-11-03 (or ending at its start) sees exactly its days
    noon = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
    assert lake.scan(NODES, start=noon - dt.timedelta(hours=2), end=noon).collect()["date"].to_list() == [
        dt.date(2026, 11, 3)
    ]
    midnight = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert lake.scan(NODES, start=T0, end=midnight).collect()["date"].to_list() == [dt.date(2026, 11, 2)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.integers(min_value=0, max_value=4000), min_size=1, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=4),
)
def test_any_split_and_repetition_of_batches_stores_each_key_once(tmp_path_factory, steps, cuts) -> None:
    lake = Lake(tmp_path_factory.mktemp("prop") / "wh", create=True)
    rows = sample_rows(minutes=steps, util=[float(s % 101) for s in steps])  # type: ignore[arg-type]
    bounds = sorted({0, rows.num_rows, *[min(c, rows.num_rows) for c in cuts]})
    for lo, hi in itertools.pairwise(bounds):
        append(lake, GPU_SAMPLES, rows.slice(lo, hi - lo))
        append(lake, GPU_SAMPLES, rows.slice(0, hi))
    got = stored(lake)
    assert got.height == len(set(steps))
    assert got["ts"].is_unique().all()


def test_within_a_batch_the_first_row_of_a_key_wins_whatever_the_order(lake: Lake) -> None:
    later = sample_rows(minutes=range(5, -1, -1), util=[60.0, 50.0, 40.0, 30.0, 20.0, 10.0])  # newest first
    repeat = sample_rows(minutes=range(6), util=99.0)
    append(lake, GPU_SAMPLES, pa.concat_tables([later, repeat]))
    got = stored(lake)
    assert got["util_pct"].to_list() == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert got["ts"].is_sorted()


def test_allocations_with_null_key_parts_dedupe(lake: Lake) -> None:
    rows = allocation_rows(minutes=range(3))
    by_pid = rows.set_column(rows.schema.get_field_index("pod"), "pod", pa.nulls(3, pa.string())).append_column(
        "pid", pa.array([4242] * 3, pa.int64())
    )
    both = pa.concat_tables([by_pid, rows.append_column("pid", pa.nulls(3, pa.int64())), by_pid])
    assert append(lake, GPU_ALLOCATIONS, both).rows_written == 6
    assert append(lake, GPU_ALLOCATIONS, both).rows_written == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["GPU-a", "GPU-b", "GPU-c"]), st.sampled_from([None, 1, 2]), st.integers(0, 30)),
        min_size=1,
        max_size=80,
    )
)
def test_any_interleaving_of_series_stores_each_key_once_first_row_winning(tmp_path_factory, rows) -> None:
    lake = Lake(tmp_path_factory.mktemp("mix") / "wh", create=True)
    batch = pa.concat_tables(
        [
            sample_rows(gpu=gpu, minutes=[step], util=float(i % 100)).append_column(  # type: ignore[arg-type]
                "mig_instance_id", pa.array([mig], pa.int32())
            )
            for i, (gpu, mig, step) in enumerate(rows)
        ]
    )
    append(lake, GPU_SAMPLES, batch)
    got = lake.scan(GPU_SAMPLES).collect()
    first: dict[tuple, float] = {}
    for i, (gpu, mig, step) in enumerate(rows):
        first.setdefault((gpu, mig, step), float(i % 100))
    stored_rows = {
        (g, m, int((ts - T0).total_seconds() // 60)): u
        for g, m, ts, u in got.select("gpu_uuid", "mig_instance_id", "ts", "util_pct").iter_rows()
    }
    assert stored_rows == first
