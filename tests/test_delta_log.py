"""Every table carries a Delta Lake log that other engines read with its transactions (README "Delta Lake log").

Read back through delta-rs (``deltalake``), Polars' ``scan_delta`` and DuckDB over the Delta table's Arrow dataset;
written by the real commit path, rolled forward after crashes at both ends of the Delta commit, and made for a
warehouse gpuledger 0.1.0 wrote (``tests/fixtures/warehouse-0.1.0``) by ``gpuledger warehouse migrate``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest
from click.testing import Result
from deltalake import DeltaTable, QueryBuilder
from polars.testing import assert_frame_equal

from tests.conftest import FIXTURES, T0, sample_rows
from warehouse import delta_log
from warehouse.ingest import append
from warehouse.lake import Lake, Table, scan_parts
from warehouse.maintenance import compact, prune
from warehouse.schema import GPU_SAMPLES, TABLES

RELEASE_WAREHOUSE = FIXTURES / "warehouse-0.1.0" / "warehouse"


class WriterKilled(BaseException):
    """Stands for SIGKILL: nothing between the crash point and the test catches it."""


def _tables(lake: Lake) -> list[Table]:
    return [t for t in (*TABLES.values(), *lake.summary_tables()) if lake.parts(t)]


def _visible(lake: Lake, table: Table) -> list[str]:
    table_dir = lake.table_dir(table)
    return sorted(str(p.relative_to(table_dir)) for p in lake.parts(table))


def _in_order(frame: pl.DataFrame) -> pl.DataFrame:
    flat = [name for name, dtype in frame.schema.items() if not dtype.is_nested()]
    return frame.select(sorted(frame.columns)).sort(sorted(flat), nulls_last=True)


def _assert_read_alike(lake: Lake) -> None:
    """Each table, read through its Delta log by Polars and DuckDB, holds exactly the rows gpuledger reads."""
    for table in _tables(lake):
        table_dir = str(lake.table_dir(table))
        assert delta_log.logged_parts(lake.table_dir(table)) == _visible(lake, table), table.name
        parts = lake.parts(table)
        ours = scan_parts(table, parts).collect() if table.schema.names else pl.read_parquet(parts)  # a summary
        through_delta = pl.scan_delta(table_dir).collect()
        assert_frame_equal(_in_order(through_delta), _in_order(ours.select(through_delta.columns)), check_dtypes=False)
        dataset = DeltaTable(table_dir).to_pyarrow_dataset()
        [(count,)] = duckdb.connect().from_arrow(dataset).aggregate("count(*)").fetchall()
        assert count == ours.height, table.name


def _versions(lake: Lake) -> int:
    return DeltaTable(str(lake.table_dir(GPU_SAMPLES))).version()


def test_every_table_of_a_simulated_fleet_reads_the_same_through_its_delta_log(
    sim_warehouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    lake = Lake(root)
    tables = {t.name for t in _tables(lake)}
    assert {"gpu_samples", "gpu_allocations", "nodes", "prices", "gpu_minutes"} <= tables
    assert any(name.startswith("_summaries/") for name in tables)
    _assert_read_alike(lake)


def test_a_batch_is_one_delta_commit_and_a_reingest_commits_nothing(lake: Lake) -> None:
    day2 = T0 + dt.timedelta(days=1)
    batch = pa.concat_tables([sample_rows("GPU-a"), sample_rows("GPU-a", start=day2, cluster="c2")])
    append(lake, GPU_SAMPLES, batch)
    table_dir = lake.table_dir(GPU_SAMPLES)
    assert _versions(lake) == 0  # the log made by the first commit, with both partitions' parts
    assert len(delta_log.logged_parts(table_dir)) == 2
    append(lake, GPU_SAMPLES, sample_rows("GPU-b"))
    assert _versions(lake) == 1
    history = DeltaTable(str(table_dir)).history()
    assert len(history) == 2
    assert append(lake, GPU_SAMPLES, batch).rows_written == 0
    assert _versions(lake) == 1
    assert pl.scan_delta(str(table_dir)).select(pl.len()).collect().item() == 30


def test_each_add_records_the_statistics_readers_skip_files_by(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(90), start=T0 + dt.timedelta(microseconds=1500)))
    table = DeltaTable(str(lake.table_dir(GPU_SAMPLES)))
    [add] = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert add["num_records"] == 90
    assert add["min.cluster"] == add["max.cluster"] == "c1"
    # Microseconds are below the statistics' precision: the maximum is rounded up, never down past a row.
    assert add["min.ts"] == dt.datetime(2026, 11, 2, 0, 0, 0, 1000, tzinfo=dt.UTC)
    assert add["max.ts"] == dt.datetime(2026, 11, 2, 1, 29, 0, 2000, tzinfo=dt.UTC)
    skipped = pl.scan_delta(str(lake.table_dir(GPU_SAMPLES))).filter(pl.col("cluster") == "c9").collect()
    assert skipped.is_empty()


def test_a_cluster_name_that_needs_escaping_reads_back_through_delta_rs(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", cluster="eu west/prod%1"))
    table_dir = lake.table_dir(GPU_SAMPLES)
    [part] = lake.parts(GPU_SAMPLES)
    assert delta_log.logged_parts(table_dir) == [str(part.relative_to(table_dir))]
    result = (
        QueryBuilder()
        .register("s", DeltaTable(str(table_dir)))
        .execute("SELECT count(*) AS n, min(cluster) AS c FROM s")
    )
    assert pa.table(result.read_all()).to_pylist() == [{"n": 10, "c": "eu west/prod%1"}]
    append(lake, GPU_SAMPLES, sample_rows("GPU-b", cluster="eu west/prod%1"))
    compact(lake)  # removes name the escaped paths too
    [merged] = lake.parts(GPU_SAMPLES)
    assert delta_log.logged_parts(table_dir) == [str(merged.relative_to(table_dir))]
    result = QueryBuilder().register("s", DeltaTable(str(table_dir))).execute("SELECT count(*) AS n FROM s")
    assert pa.table(result.read_all()).to_pylist() == [{"n": 20}]


def test_compaction_and_retention_take_replaced_parts_out_of_the_log(lake: Lake) -> None:
    for chunk in range(6):
        append(lake, GPU_SAMPLES, sample_rows(minutes=range(chunk * 100, chunk * 100 + 100)))
    table_dir = str(lake.table_dir(GPU_SAMPLES))
    before = _versions(lake)
    compact(lake, target_rows=250)
    assert _versions(lake) == before + 1
    assert delta_log.logged_parts(lake.table_dir(GPU_SAMPLES)) == _visible(lake, GPU_SAMPLES)
    assert len(_visible(lake, GPU_SAMPLES)) == 3
    # The version before the compaction still reads: its parts stay on disk for the grace period.
    old = DeltaTable(table_dir, version=before)
    assert pl.DataFrame(pa.table(QueryBuilder().register("s", old).execute("SELECT * FROM s").read_all())).height == 600
    assert pl.scan_delta(table_dir).select(pl.len()).collect().item() == 600

    append(lake, GPU_SAMPLES, sample_rows(minutes=range(10), start=T0 + dt.timedelta(days=5)))
    prune(lake, keep_days=1, today=(T0 + dt.timedelta(days=5)).date())
    assert delta_log.logged_parts(lake.table_dir(GPU_SAMPLES)) == _visible(lake, GPU_SAMPLES)
    assert pl.scan_delta(table_dir).select(pl.len()).collect().item() == 10


def test_a_writer_killed_before_its_delta_commit_is_rolled_forward_into_the_log(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-old"))

    def killed(self: Lake, journal: object, version: int) -> None:
        raise WriterKilled

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_record_delta", killed)
        with pytest.raises(WriterKilled):
            append(lake, GPU_SAMPLES, sample_rows("GPU-new"))
    assert _versions(lake) == 0  # linked into place, the journal pending, the Delta commit not made
    assert len(list((lake.root / "_journal").glob("*.json"))) == 1

    with lake.writing():  # the next writer rolls it forward
        pass
    assert _versions(lake) == 1
    assert delta_log.logged_parts(lake.table_dir(GPU_SAMPLES)) == _visible(lake, GPU_SAMPLES)
    assert pl.scan_delta(str(lake.table_dir(GPU_SAMPLES))).select(pl.len()).collect().item() == 20


def test_a_writer_killed_after_its_delta_commit_adds_nothing_twice(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-old"))
    record = Lake._record_delta

    def committed_then_killed(self: Lake, journal: object, version: int) -> None:
        record(self, journal, version)  # type: ignore[arg-type]
        raise WriterKilled

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_record_delta", committed_then_killed)
        with pytest.raises(WriterKilled):
            append(lake, GPU_SAMPLES, sample_rows("GPU-new"))
    assert _versions(lake) == 1
    with lake.writing():  # the journal is rolled forward again: its version is in the log already
        pass
    assert list((lake.root / "_journal").glob("*.json")) == []
    assert _versions(lake) == 1
    assert pl.scan_delta(str(lake.table_dir(GPU_SAMPLES))).select(pl.len()).collect().item() == 20


def test_migrate_gives_a_warehouse_the_release_wrote_its_delta_logs(tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = tmp_path / "wh"
    shutil.copytree(RELEASE_WAREHOUSE, root)
    assert not list(root.rglob(delta_log.LOG_DIR))
    lake = Lake(root)
    tables = _tables(lake)

    result = cli("warehouse", "migrate", "--warehouse", str(root))
    assert result.exit_code == 0, result.output
    for table in tables:
        assert f"{table.name}: Delta log made with {len(lake.parts(table))} parts" in result.output
    _assert_read_alike(lake)

    again = cli("warehouse", "migrate", "--warehouse", str(root))
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [f"{t.name}: Delta log in line" for t in tables]
    # The current release writes on: its next batch is the log's next version.
    append(lake, GPU_SAMPLES, sample_rows("GPU-after-migrate", cluster="train-use1"))
    assert _versions(lake) == 1
    _assert_read_alike(lake)


def test_migrate_brings_a_log_in_line_after_an_older_release_wrote(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., Result]
) -> None:
    for chunk in range(3):
        append(lake, GPU_SAMPLES, sample_rows(minutes=range(chunk * 10, chunk * 10 + 10)))
    with monkeypatch.context() as patch:  # what a release without the log does: commits, and no Delta commit
        patch.setattr(Lake, "_record_delta", lambda self, journal, version: None)
        append(lake, GPU_SAMPLES, sample_rows("GPU-b"))
        compact(lake, target_rows=1000)
    assert delta_log.logged_parts(lake.table_dir(GPU_SAMPLES)) != _visible(lake, GPU_SAMPLES)

    result = cli("warehouse", "migrate", "--warehouse", str(lake.root))
    assert result.exit_code == 0, result.output
    assert "gpu_samples: Delta log brought in line: 1 parts added, 3 removed" in result.output
    _assert_read_alike(lake)


def test_a_damaged_log_fails_no_write_and_migrate_makes_it_anew(
    lake: Lake, caplog: pytest.LogCaptureFixture, cli: Callable[..., Result]
) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-a"))
    log_dir = lake.table_dir(GPU_SAMPLES) / delta_log.LOG_DIR
    (log_dir / "00000000000000000000.json").write_text('{"commitInfo": ')
    with caplog.at_level(logging.WARNING):
        written = append(lake, GPU_SAMPLES, sample_rows("GPU-b")).rows_written
    assert written == 10
    assert lake.scan(GPU_SAMPLES).collect().height == 20  # gpuledger's own readers are unaffected
    [warning] = [r.getMessage() for r in caplog.records if "Delta log" in r.getMessage()]
    assert f"the Delta log of {lake.table_dir(GPU_SAMPLES)} was not updated" in warning
    assert f"`gpuledger warehouse migrate --warehouse {lake.root}`" in warning

    result = cli("warehouse", "migrate", "--warehouse", str(lake.root))
    assert result.exit_code == 0, result.output
    assert "gpu_samples: the Delta log could not be read; moved it under _quarantine/, made it anew with 2 parts" in (
        result.output
    )
    [kept] = (lake.root / "_quarantine" / "gpu_samples").glob(f"{delta_log.LOG_DIR}.*")
    assert (kept / "00000000000000000000.json").read_text() == '{"commitInfo": '
    _assert_read_alike(lake)


def test_a_quarantined_part_leaves_the_log(lake: Lake, cli: Callable[..., Result]) -> None:
    append(lake, GPU_SAMPLES, sample_rows("GPU-a"))
    append(lake, GPU_SAMPLES, sample_rows("GPU-b"))
    damaged, kept = lake.parts(GPU_SAMPLES)
    with damaged.open("r+b") as handle:
        handle.truncate(damaged.stat().st_size // 2)
    result = cli("warehouse", "check", "--warehouse", str(lake.root), "--quarantine")
    assert result.exit_code == 0, result.output
    table_dir = lake.table_dir(GPU_SAMPLES)
    assert delta_log.logged_parts(table_dir) == [str(kept.relative_to(table_dir))]
    assert pl.scan_delta(str(table_dir)).select(pl.len()).collect().item() == 10
