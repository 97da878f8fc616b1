"""The newest stored time read from footer statistics, and its fall-back when a part carries none."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.reading import stored_time_max

T0 = dt.datetime(2026, 11, 3, 12, 0, tzinfo=dt.UTC)


def part(path: Path, stamps: list[dt.datetime | None], *, statistics: bool = True, unit: str = "us") -> Path:
    table = pa.table({"ts": pa.array(stamps, pa.timestamp(unit, tz="UTC")), "v": list(range(len(stamps)))})
    pq.write_table(table, path, write_statistics=statistics, row_group_size=2)
    return path


def test_the_latest_time_over_parts_and_row_groups_to_the_microsecond(tmp_path: Path) -> None:
    late = T0 + dt.timedelta(hours=5, microseconds=123_457)
    files = [
        part(tmp_path / "a.parquet", [T0, T0 + dt.timedelta(minutes=1), late, T0]),
        part(tmp_path / "b.parquet", [T0 + dt.timedelta(hours=1), None]),
    ]
    assert stored_time_max(files, "ts") == late


def test_other_units_read_the_same(tmp_path: Path) -> None:
    late = T0 + dt.timedelta(seconds=7)
    assert stored_time_max([part(tmp_path / "s.parquet", [T0, late], unit="s")], "ts") == late
    assert stored_time_max([part(tmp_path / "ns.parquet", [late, T0], unit="ns")], "ts") == late


def test_no_statistics_means_unknown_and_all_nulls_mean_none(tmp_path: Path) -> None:
    with_stats = part(tmp_path / "a.parquet", [T0])
    assert stored_time_max([with_stats, part(tmp_path / "b.parquet", [T0], statistics=False)], "ts") is None
    assert stored_time_max([part(tmp_path / "c.parquet", [None, None])], "ts") is None
    assert stored_time_max([], "ts") is None
