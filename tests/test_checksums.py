"""Reads verify every page's CRC, so one flipped byte inside a data page fails the read that meets it, naming the
file, instead of decoding into wrong numbers.

Polars' and DuckDB's own Parquet readers check no page CRC: a flipped byte inside a compressed float page often
decodes into other floats. These tests flip bytes inside the data pages of a ``nodes`` and a ``gpu_samples`` part
of a small simulated warehouse; wherever Polars' own reader returns wrong rows without an error, ``gpuledger
report`` and ``gpuledger query`` must exit 2 with one line naming the part and the fix; and no flip anywhere may
give a different answer without an error.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from gpuledger.cli import main
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES, NODES, Table

Cli = Callable[..., Result]
POSITIONS = 160
"""Flipped bytes tried per part, spread evenly over its data pages."""
CLI_FLIPS = 2
"""Flips (where Polars alone would return wrong rows) run through the CLI per part."""


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crc") / "wh"
    result = CliRunner().invoke(
        main, ["simulate", "--warehouse", str(root), "--gpus", "4", "--days", "1", "--end", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    return root


def _data_pages(path: Path) -> list[int]:
    """Every byte offset inside the column chunks (dictionary and data pages, with their headers)."""
    meta = pq.read_metadata(path)
    offsets: list[int] = []
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk = meta.row_group(g).column(c)
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            offsets.extend(range(start, start + chunk.total_compressed_size))
    return offsets


def _flipped(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 0x04
    return bytes(damaged)


def _read(lake: Lake, table: Table) -> pl.DataFrame | None:
    """The table as gpuledger reads it, or None when the read fails."""
    try:
        return lake.scan(table).collect()
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError):
        return None


def _silently_wrong(part: Path, pristine: pl.DataFrame) -> bool:
    """True when Polars' own reader decodes the damaged part into other rows without an error."""
    try:
        return not pl.read_parquet(part, hive_partitioning=False).equals(pristine)
    except (OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException):  # Polars may panic on bad pages
        return False


def _assert_names_corrupt_part(result: Result, root: Path, part: Path) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: corrupt Parquet part {part} ("), line
    assert line.endswith(f"): move it aside with `gpuledger warehouse check --warehouse {root} --quarantine`"), line


@pytest.mark.parametrize("table", [NODES, GPU_SAMPLES], ids=lambda t: t.name)
def test_a_flipped_byte_in_a_data_page_fails_the_read_naming_the_part(
    simulated: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, table: Table
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(simulated, root)
    lake = Lake(root)
    part = lake.parts(table)[0]
    pristine_bytes = part.read_bytes()
    pristine_part = pl.read_parquet(part, hive_partitioning=False)
    pristine = lake.scan(table).collect()

    pages = _data_pages(part)
    step = max(1, len(pages) // POSITIONS)
    tried = detected = 0
    wrong: list[int] = []
    dangerous: list[int] = []
    for position in pages[::step]:
        part.write_bytes(_flipped(pristine_bytes, position))
        got = _read(lake, table)
        tried += 1
        if got is None:
            detected += 1
        elif not got.equals(pristine):
            wrong.append(position)
        if _silently_wrong(part, pristine_part):
            dangerous.append(position)
    part.write_bytes(pristine_bytes)
    assert wrong == [], f"{len(wrong)} of {tried} flips read as other rows without an error: bytes {wrong[:10]}"
    assert len(dangerous) >= CLI_FLIPS, f"only {len(dangerous)} of {tried} flips fool Polars' own reader"
    assert detected >= len(dangerous)

    if table is GPU_SAMPLES:
        # a fresh rollup reads only the samples' footers; new state rules make the report read every sample
        monkeypatch.setenv("GPULEDGER_ACTIVE_THRESHOLD_PCT", "7.5")
    every_column = f"SELECT count(*) AS n, sum(hash(t)) AS h FROM {table.name} t"
    for position in dangerous[:: max(1, len(dangerous) // CLI_FLIPS)][:CLI_FLIPS]:
        part.write_bytes(_flipped(pristine_bytes, position))
        _assert_names_corrupt_part(cli("report", "--warehouse", str(root), "--format", "json"), root, part)
        _assert_names_corrupt_part(cli("query", "--warehouse", str(root), every_column), root, part)
    part.write_bytes(pristine_bytes)
    assert cli("report", "--warehouse", str(root), "--format", "json").exit_code == 0
