"""Reading parts with every page's CRC checked as it is decoded: a Polars scan and an Arrow dataset (for DuckDB).

Parts are written with a CRC per page (``lake._write_options``). DuckDB's own Parquet reader (1.x, 2.0) does not
verify page CRCs, and neither does Polars', so a flipped bit inside a compressed page can decode into wrong numbers
without an error. Both readers here make such a page fail loudly (an ``OSError`` naming the CRC mismatch).

``scan`` feeds Polars through pyarrow's Parquet reader, one row group at a time, reading only the projected columns;
``dataset`` is an Arrow dataset that DuckDB scans with projection and filter pushdown. ``pyarrow.dataset`` is
imported only by ``dataset``: importing it imports pandas (about 0.5 s), which a report does not need.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from warehouse.schema import Table

if TYPE_CHECKING:
    import pyarrow.dataset as ds


def scan(table: Table, files: Sequence[Path | str]) -> pl.LazyFrame:
    """The parts ``files`` of ``table`` as one lazy frame with the table's schema: a column a part lacks (written
    before the column existed) reads as nulls, and a damaged page raises instead of decoding silently."""
    schema = polars_schema(table)

    def read(
        with_columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None, _batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        left = n_rows
        for part in batches(table, files, with_columns, verify=True):
            if left is not None and left <= 0:
                return
            if predicate is not None:
                part = part.filter(predicate)
            if left is not None:
                part = part.head(left)
                left -= part.height
            yield part

    return register_io_source(read, schema=schema, is_pure=True, explain_name="gpuledger-parts")


def polars_schema(table: Table, *, categorical: bool = False) -> pl.Schema:
    """``table``'s schema as Polars types; text columns as ``Categorical`` when ``categorical``."""
    frame = pl.from_arrow(pa.Table.from_batches([], schema=table.schema))  # ``Schema.empty_table`` imports pandas
    assert isinstance(frame, pl.DataFrame)
    if not categorical:
        return frame.schema
    return pl.Schema({c: pl.Categorical() if t == pl.String else t for c, t in frame.schema.items()})


def batches(
    table: Table,
    files: Sequence[Path | str],
    columns: Sequence[str] | None = None,
    *,
    categorical: bool = False,
    verify: bool = True,
) -> Iterator[pl.DataFrame]:
    """The row groups of ``files`` one frame at a time, ``columns`` only (all when None), in ``table``'s schema; a
    column a part lacks reads as nulls, and with ``verify`` a damaged page raises.

    With ``categorical`` the text columns are read as ``Categorical`` straight from the parts' Parquet dictionaries
    (every text column is dictionary-encoded, ``lake._write_options``), so no string is decoded per row: about a
    sixth of the time and half the memory of reading the strings for a week of ``gpu_minutes`` on 1,024 GPUs
    (docs/benchmarks.md, "Recommendations")."""
    schema = polars_schema(table, categorical=categorical)
    wanted = list(columns) if columns is not None else list(schema)
    texts = [c for c in wanted if schema[c] == pl.Categorical()] if categorical else []
    for path in files:
        handle = pq.ParquetFile(str(path), page_checksum_verification=verify, read_dictionary=texts or None)
        present = [c for c in wanted if c in handle.schema_arrow.names]
        for group in range(handle.num_row_groups):
            part = pl.from_arrow(handle.read_row_group(group, columns=present))
            assert isinstance(part, pl.DataFrame)
            yield part.select((pl.col(c) if c in present else pl.lit(None)).cast(schema[c]).alias(c) for c in wanted)


def stored_time_max(files: Sequence[Path | str], column: str) -> dt.datetime | None:
    """The latest value of the timestamp ``column`` in ``files`` by the row-group statistics in their footers (no
    page is read); None when no value is set, or when a part lacks statistics for it (written by another tool)."""
    best: int | None = None
    per_second = 1
    for path in files:
        handle = pq.ParquetFile(path)
        index = handle.schema_arrow.get_field_index(column)
        if index < 0:
            continue
        kind = handle.schema_arrow.field(index).type
        assert pa.types.is_timestamp(kind), f"{column} is not a timestamp"
        per_second = _PER_SECOND[kind.unit]
        for group in range(handle.metadata.num_row_groups):
            stats = handle.metadata.row_group(group).column(index).statistics
            if stats is None:
                return None
            if stats.has_min_max and (best is None or stats.max_raw > best):  # max_raw: .max would import pandas
                best = stats.max_raw
    return None if best is None else EPOCH + dt.timedelta(microseconds=best * 1_000_000 // per_second)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def dataset(table: Table, files: Sequence[Path | str]) -> ds.Dataset:
    """The parts ``files`` of ``table`` as one Arrow dataset with the table's schema (missing columns read as
    nulls, damaged pages raise)."""
    import pyarrow.dataset as ds

    scan_options = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
    parquet = ds.ParquetFileFormat(default_fragment_scan_options=scan_options)
    return ds.dataset([str(f) for f in files], schema=table.schema, format=parquet)
