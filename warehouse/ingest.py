"""Appending rows: validate a batch against its table contract, drop rows already stored, write it atomically.

Rows stamped at an impossible time (before 2000-01-01 or more than a day after now: a clock reset to the epoch, a
unit mix-up) are dropped from the batch, not stored: they would move every default window. Their count is logged
and kept in the warehouse state ``rejected-timestamps``, which the dashboard's data-health page shows.

Idempotency strategy: **dedupe on append**. A batch is first made unique on the table key (first row wins), then
anti-joined against the keys already stored in the partitions it touches (same date and cluster, restricted to the
batch's time range). Re-appending rows that are stored changes no count and no value: the stored row wins. Readers
therefore never need to deduplicate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.errors import SchemaViolation
from warehouse.lake import Lake, Partition, Staged
from warehouse.schema import EARLIEST, GPU_ALLOCATIONS, GPU_SAMPLES, Table, latest_plausible, utc_now

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
TIME_CHECKED = (GPU_SAMPLES.name, GPU_ALLOCATIONS.name)
REJECTED_STATE = "rejected-timestamps"


@dataclass(frozen=True)
class AppendResult:
    table: str
    rows_in: int
    rows_written: int
    parts: int
    rows_rejected: int = 0
    """Rows dropped for an impossible timestamp (outside [EARLIEST, now + FUTURE_SLACK])."""

    @property
    def rows_skipped(self) -> int:
        """Rows already stored (or repeated in the batch)."""
        return self.rows_in - self.rows_rejected - self.rows_written


@dataclass(frozen=True)
class RejectedTimes:
    """The running count of rows dropped for impossible timestamps, as kept in the warehouse state."""

    rows: int
    last_rejected_at: dt.datetime
    earliest_stamp: dt.datetime
    latest_stamp: dt.datetime
    by_table: dict[str, int]


def rejected_times(lake: Lake) -> RejectedTimes | None:
    """What ingest has dropped for impossible timestamps so far, or None when it never dropped a row."""
    state = lake.read_state(REJECTED_STATE)
    if not state or not state.get("rows"):
        return None
    return RejectedTimes(
        rows=int(state["rows"]),
        last_rejected_at=dt.datetime.fromisoformat(state["last_rejected_at"]),
        earliest_stamp=dt.datetime.fromisoformat(state["earliest_stamp"]),
        latest_stamp=dt.datetime.fromisoformat(state["latest_stamp"]),
        by_table={str(k): int(v) for k, v in state.get("by_table", {}).items()},
    )


def conform(table: Table, data: pa.Table) -> pa.Table:
    """``data`` cast to the table's schema, or SchemaViolation naming the first offending column."""
    unknown = [name for name in data.column_names if name not in table.schema.names]
    if unknown:
        raise SchemaViolation(table.name, unknown[0], f"unknown column (the table has {', '.join(table.columns)})")
    columns = []
    for fld in table.schema:
        if fld.name not in data.column_names:
            if fld.name in table.required:
                raise SchemaViolation(table.name, fld.name, "required column is missing")
            columns.append(pa.nulls(data.num_rows, fld.type))
            continue
        columns.append(_cast_column(table, fld, data.column(fld.name)))
    out = pa.Table.from_arrays(columns, schema=table.schema)
    _check_values(table, out)
    return out


def append(lake: Lake, table: Table, data: pa.Table, *, clock: Clock = utc_now) -> AppendResult:
    """Validate ``data`` and add its new rows to ``table`` in one transaction; rows stamped at an impossible time
    (judged against ``clock()``) are dropped, logged and counted in the warehouse state instead."""
    conformed = conform(table, data)
    rows_in = conformed.num_rows
    if rows_in == 0:
        return AppendResult(table.name, 0, 0, 0)
    now = clock()
    conformed, rejected = _drop_impossible_times(table, conformed, now)
    frame = pl.from_arrow(conformed)
    assert isinstance(frame, pl.DataFrame)
    frame = _unique_sorted(frame, table)
    with lake.writing():
        staged: list[Staged] = []
        for partition, rows in _split(table, frame):
            rows = _drop_stored(lake, table, partition, rows)
            if rows.height:
                staged.append(lake.stage(table, partition, rows.to_arrow().cast(table.schema)))
        lake.commit(staged)
        if rejected is not None:
            _count_rejected(lake, table, rejected, now)
    return AppendResult(
        table.name, rows_in, sum(s.rows for s in staged), len(staged), rejected.num_rows if rejected else 0
    )


def append_many(lake: Lake, batches: Sequence[tuple[Table, pa.Table]], *, clock: Clock = utc_now) -> list[AppendResult]:
    """Append several tables' batches under one hold of the writer lock (each batch its own transaction)."""
    with lake.writing():
        return [append(lake, table, data, clock=clock) for table, data in batches]


def _drop_impossible_times(table: Table, data: pa.Table, now: dt.datetime) -> tuple[pa.Table, pa.Table | None]:
    """``data`` without its rows stamped before EARLIEST or after ``latest_plausible(now)``, and those rows' times."""
    if table.name not in TIME_CHECKED or table.time_column is None:
        return data, None
    stamps = data.column(table.time_column)
    low = pa.scalar(EARLIEST, stamps.type)
    high = pa.scalar(latest_plausible(now), stamps.type)
    bad = pc.or_(pc.less(stamps, low), pc.greater(stamps, high))
    if not pc.any(bad).as_py():
        return data, None
    rejected = pc.filter(data.select([table.time_column]), bad)
    kept = pc.filter(data, pc.invert(bad))
    bounds = pc.min_max(rejected.column(table.time_column)).as_py()
    log.warning(
        "%s: dropped %d row(s) stamped outside %s .. %s (impossible timestamps, %s .. %s); the rest of the batch "
        "is stored",
        table.name,
        rejected.num_rows,
        EARLIEST.isoformat(),
        high.as_py().isoformat(),
        bounds["min"].isoformat(),
        bounds["max"].isoformat(),
    )
    return kept, rejected


def _count_rejected(lake: Lake, table: Table, rejected: pa.Table, now: dt.datetime) -> None:
    """Add ``rejected`` to the running count in the warehouse state (the caller holds the writer lock)."""
    bounds = pc.min_max(rejected.column(0)).as_py()
    state: dict[str, Any] = lake.read_state(REJECTED_STATE) or {}
    by_table = {**state.get("by_table", {})}
    by_table[table.name] = int(by_table.get(table.name, 0)) + rejected.num_rows
    earliest = [bounds["min"], *(dt.datetime.fromisoformat(v) for v in [state.get("earliest_stamp")] if v)]
    latest = [bounds["max"], *(dt.datetime.fromisoformat(v) for v in [state.get("latest_stamp")] if v)]
    lake.write_state(
        REJECTED_STATE,
        {
            "rows": int(state.get("rows", 0)) + rejected.num_rows,
            "by_table": by_table,
            "last_rejected_at": now.isoformat(),
            "earliest_stamp": min(earliest).isoformat(),
            "latest_stamp": max(latest).isoformat(),
        },
    )


def _unique_sorted(frame: pl.DataFrame, table: Table) -> pl.DataFrame:
    """``frame`` with each key once (the first in input order kept) and equal keys' rows grouped together.

    A batch that already arrives grouped by series (every GPU's rows contiguous and in time order, as collectors
    and the simulator produce them) is kept in its order; any other batch is sorted by the key. Either way equal
    keys end up adjacent, so duplicates are found by comparing each row with the one before, without hashing.
    """
    key = list(table.key)
    if frame.height > 1 and not _grouped_by_series(frame, table):
        frame = frame.sort(key, nulls_last=True, maintain_order=True)
    repeated = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in key])
    if frame.select(repeated.any()).item():
        frame = frame.filter(~repeated.fill_null(False))
    return frame


def _grouped_by_series(frame: pl.DataFrame, table: Table) -> bool:
    """True when each series (the key columns before the time column) is one contiguous run of rows whose
    remaining key columns never decrease. Nullable key columns compare as a nulls-last sort would."""
    key = list(table.key)
    split = key.index(table.time_column) if table.time_column in key else len(key)
    series, within = key[:split], key[split:]
    same_series = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).shift(1)) for c in series])
    ordered, equal_so_far = pl.lit(True), same_series
    for name in within:
        column = _nulls_last(frame, name)
        previous = column.shift(1)
        ordered = ordered & (~equal_so_far | (column >= previous).fill_null(True))
        equal_so_far = equal_so_far & (column == previous).fill_null(True)
    checks = frame.select(ordered.all().alias("ordered"), (~same_series).alias("starts"))
    if not checks["ordered"][0]:
        return False
    starts = frame.filter(checks["starts"]).select(series)
    return starts.height == starts.unique().height


def _nulls_last(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[name]
    if dtype == pl.String:
        return pl.col(name).fill_null("\U0010ffff")
    if dtype.is_integer():
        return pl.col(name).fill_null(dtype.max())  # type: ignore[attr-defined]
    return pl.col(name)


def _split(table: Table, frame: pl.DataFrame) -> list[tuple[Partition, pl.DataFrame]]:
    by: list[str] = []
    if table.time_column is not None:
        day = pl.col(table.time_column)
        frame = frame.with_columns((day.dt.date() if frame.schema[table.time_column] != pl.Date else day).alias("_d"))
        by.append("_d")
    if table.partition_by_cluster:
        by.append("cluster")
    if not by:
        return [(Partition(None, None), frame)]
    out = []
    for values, rows in frame.partition_by(by, as_dict=True, maintain_order=True).items():
        named = dict(zip(by, values, strict=True))
        date = named.get("_d")
        assert date is None or isinstance(date, dt.date)
        cluster = named.get("cluster")
        out.append((Partition(date, str(cluster) if cluster is not None else None), rows.drop("_d", strict=False)))
    return out


def _drop_stored(lake: Lake, table: Table, partition: Partition, rows: pl.DataFrame) -> pl.DataFrame:
    existing = lake.parts(table, start=partition.date, end=partition.date, cluster=partition.cluster)
    if not existing:
        return rows
    key = list(table.key)
    stored = pl.scan_parquet([str(p) for p in existing], hive_partitioning=False).select(key)
    if table.time_column is not None:
        col = pl.col(table.time_column)
        stored = stored.filter(col.is_between(rows[table.time_column].min(), rows[table.time_column].max()))
    stored_keys = stored.collect().cast(rows.select(key).schema)
    if stored_keys.height == 0:
        return rows
    return rows.join(stored_keys, on=key, how="anti", nulls_equal=True, maintain_order="left")


_FAMILIES = {
    "int": pa.types.is_integer,
    "float": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
    "timestamp": pa.types.is_timestamp,
    "date": lambda t: pa.types.is_date(t) or pa.types.is_timestamp(t),
}


def _family(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_date(dtype):
        return "date"
    return "string"


def _cast_column(table: Table, fld: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_dictionary(source):
        column = column.cast(source.value_type)
        source = column.type
    if pa.types.is_null(source):
        return pa.chunked_array([pa.nulls(len(column), fld.type)])
    family = _family(fld.type)
    if not _FAMILIES[family](source):
        raise SchemaViolation(table.name, fld.name, f"expected {fld.type}, got {source}")
    if pa.types.is_timestamp(source) and source.tz is None:
        column = column.cast(pa.timestamp(source.unit, tz="UTC"))
    try:
        return column.cast(fld.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaViolation(table.name, fld.name, f"cannot be stored as {fld.type} ({exc})") from None


def _check_values(table: Table, data: pa.Table) -> None:
    for name in table.required:
        if data.column(name).null_count:
            raise SchemaViolation(table.name, name, f"{data.column(name).null_count} row(s) have no value (required)")
    if table.any_of:
        missing = pc.and_(*(pc.is_null(data.column(c)) for c in table.any_of))
        count = pc.sum(missing.cast(pa.int64())).as_py() or 0
        if count:
            raise SchemaViolation(
                table.name, "/".join(table.any_of), f"{count} row(s) name no holder (need one of them)"
            )
    for name, (low, high) in table.ranges.items():
        column = data.column(name)
        if pa.types.is_floating(column.type):
            nans = pc.sum(pc.is_nan(column).cast(pa.int64())).as_py() or 0
            if nans:
                raise SchemaViolation(table.name, name, f"{nans} row(s) are NaN")
        bounds = pc.min_max(column).as_py()
        if bounds["min"] is not None and low is not None and bounds["min"] < low:
            raise SchemaViolation(table.name, name, f"value {bounds['min']} is below {low}")
        if bounds["max"] is not None and high is not None and bounds["max"] > high:
            raise SchemaViolation(table.name, name, f"value {bounds['max']} is above {high}")
    for name, values in table.allowed.items():
        column = data.column(name)
        bad = pc.filter(column, pc.invert(pc.is_in(column, value_set=pa.array(values))))
        bad = pc.drop_null(bad)
        if len(bad):
            raise SchemaViolation(table.name, name, f"{bad[0].as_py()!r} is not one of {', '.join(values)}")
