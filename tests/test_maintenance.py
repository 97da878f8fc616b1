"""Compaction and retention keep every row readable and change no value; DuckDB sees what Polars sees."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
from polars.testing import assert_frame_equal

from tests.conftest import T0, sample_rows
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.maintenance import compact, prune
from warehouse.schema import GPU_SAMPLES, TABLES
from warehouse.views import connect


def test_compaction_merges_small_parts_and_keeps_every_row(lake: Lake) -> None:
    for chunk in range(6):
        append(lake, GPU_SAMPLES, sample_rows(minutes=range(chunk * 100, chunk * 100 + 100)))
    before = lake.scan(GPU_SAMPLES).collect().sort("ts")
    assert len(lake.parts(GPU_SAMPLES)) == 6
    result = compact(lake, target_rows=250)
    assert (result.partitions, result.parts_before, result.parts_after) == (1, 6, 3)
    assert len(lake.parts(GPU_SAMPLES)) == 3
    assert_frame_equal(lake.scan(GPU_SAMPLES).collect().sort("ts"), before)
    assert compact(lake, target_rows=250).partitions == 0
    # Dedupe still sees compacted rows.
    assert append(lake, GPU_SAMPLES, sample_rows(minutes=range(600))).rows_written == 0


def test_prune_drops_old_dates_only(lake: Lake) -> None:
    for day in range(5):
        append(lake, GPU_SAMPLES, sample_rows(minutes=range(10), start=T0 + dt.timedelta(days=day)))
    removed = prune(lake, keep_days=2, today=dt.date(2026, 11, 6))
    assert removed == 2
    dates = sorted(p.date for p in lake.partitions(GPU_SAMPLES))
    assert dates == [dt.date(2026, 11, 4), dt.date(2026, 11, 5), dt.date(2026, 11, 6)]


def test_duckdb_views_match_polars_scans(sim_warehouse: Path, tmp_path: Path) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    lake = Lake(root)
    con = connect(lake)
    for name, table in TABLES.items():
        via_duckdb = con.execute(f"SELECT count(*) FROM {name}").fetchone()
        assert via_duckdb is not None
        assert via_duckdb[0] == lake.scan(table).select(pl.len()).collect().item(), name
    util = con.execute("SELECT round(avg(util_pct), 6) FROM gpu_samples").fetchone()
    assert util is not None
    assert util[0] == round(lake.scan(GPU_SAMPLES).select(pl.col("util_pct").mean()).collect().item(), 6)
    p5 = con.execute(
        "SELECT on_demand_usd_per_hour, interruption_bucket FROM prices WHERE instance_type = 'p5.48xlarge'"
    ).fetchall()
    assert p5 == [(55.04, 4)]  # the catalog the simulated fleet was priced with (data/SOURCES.md sanity point)


def test_state_documents_are_replaced_whole(lake: Lake) -> None:
    assert lake.read_state("scrape/http://prom:9090") is None
    lake.write_state("scrape/http://prom:9090", {"watermark": "2026-11-02T00:00:00+00:00"})
    lake.write_state("scrape/http://prom:9090", {"watermark": "2026-11-03T00:00:00+00:00"})
    assert lake.read_state("scrape/http://prom:9090") == {"watermark": "2026-11-03T00:00:00+00:00"}
    assert [p.name for p in (lake.root / "_state").iterdir()] == ["scrape_http___prom_9090.json"]
