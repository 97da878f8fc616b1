"""The Delta Lake log beside each table, so that Spark, Trino, Athena, Databricks, DuckDB and Polars read a table
with its transactions instead of listing its directory (README "Delta Lake log").

gpuledger's journal (``warehouse.lake``) stays the commit point and its own readers go on listing the directory; once
a transaction's parts are linked into place, every table it touched gets one Delta commit that adds them and
removes the parts it replaced. So a Delta reader sees each batch of a table whole or not at all, and never a part a
compaction replaced. Each commit carries the journal's time as an application transaction (app id ``gpuledger``):
a journal rolled forward again after a crash finds its version there and commits nothing twice. A table without a
log (a warehouse an older release wrote) gets one holding every visible part, at its first write or with
``gpuledger warehouse migrate``, which also brings a log back in line with the parts.

Delta sees each table unpartitioned: ``cluster`` is a column in the files and the date is not, so readers skip
files by the statistics of each add (rows, and the minimum and maximum of the time column and ``cluster``, from
the Parquet footer). Paths in the log are relative to the table; delta-rs percent-encodes them, as the protocol
asks.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, Field
from deltalake.exceptions import DeltaError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)
from deltalake.transaction import Schema as DeltaSchema

APP_ID: Final = "gpuledger"
LOG_DIR: Final = "_delta_log"
STAT_COLUMNS: Final = ("cluster",)
"""Columns besides the time column whose minimum and maximum each add records, for readers to skip files by."""
ERRORS: Final = (DeltaError, OSError, pa.ArrowException, ValueError)
"""What writing a log can raise: a damaged or foreign log, a part gone, a footer unreadable."""


@dataclass(frozen=True)
class Synced:
    """What ``sync`` did to one table's log."""

    created: bool
    added: int
    removed: int


def has_log(table_dir: Path) -> bool:
    return DeltaTable.is_deltatable(str(table_dir))


def record(
    table_dir: Path,
    schema: pa.Schema,
    *,
    adds: Sequence[str],
    removes: Sequence[str],
    version: int,
    time_column: str | None,
    visible: Callable[[], Sequence[str]],
) -> None:
    """One Delta commit for one gpuledger transaction on one table: ``adds`` and ``removes`` are part paths relative
    to ``table_dir``; ``version`` identifies the transaction (a second call with it commits nothing). A table
    without a log gets one holding ``visible()``, every part visible once the transaction is applied."""
    if not has_log(table_dir):
        _create(table_dir, schema, visible(), version, time_column)
        return
    table = DeltaTable(str(table_dir))
    if table.transaction_version(APP_ID) == version:
        return
    _evolve(table, schema)
    added = set(adds)
    actions: list[AddAction | RemoveAction] = [
        _add(table_dir, rel, time_column) for rel in adds if (table_dir / rel).is_file()
    ]
    stamp = int(time.time() * 1000)
    actions += [RemoveAction(rel, True, stamp) for rel in dict.fromkeys(removes) if rel not in added]
    if actions:
        _commit(table, actions, version)


def sync(
    table_dir: Path, schema: pa.Schema, visible: Sequence[str], *, version: int, time_column: str | None
) -> Synced:
    """Make the table's log list exactly ``visible`` (a log made if there is none, the parts an older release added
    or removed since added or removed in one commit), for ``gpuledger warehouse migrate``."""
    if not has_log(table_dir):
        _create(table_dir, schema, visible, version, time_column)
        return Synced(True, len(visible), 0)
    table = DeltaTable(str(table_dir))
    _evolve(table, schema)
    logged = set(logged_parts(table_dir))
    wanted = set(visible)
    stamp = int(time.time() * 1000)
    actions: list[AddAction | RemoveAction] = [_add(table_dir, rel, time_column) for rel in sorted(wanted - logged)]
    actions += [RemoveAction(rel, True, stamp) for rel in sorted(logged - wanted)]
    if actions:
        _commit(table, actions, version)
    return Synced(False, len(wanted - logged), len(logged - wanted))


def logged_parts(table_dir: Path) -> list[str]:
    """The parts the table's current Delta version lists, relative to ``table_dir`` (decoded)."""
    actions = DeltaTable(str(table_dir)).get_add_actions(flatten=True)
    return sorted(unquote(str(path)) for path in pa.table(actions).column("path").to_pylist())


def _create(table_dir: Path, schema: pa.Schema, parts: Sequence[str], version: int, time_column: str | None) -> None:
    table_dir.mkdir(parents=True, exist_ok=True)
    create_table_with_add_actions(
        str(table_dir),
        DeltaSchema.from_arrow(_plain(schema)),
        [_add(table_dir, rel, time_column) for rel in parts],
        mode="error",
        commit_properties=_versioned(version),
    )


def _commit(table: DeltaTable, actions: list[AddAction | RemoveAction], version: int) -> None:
    table.create_write_transaction(actions, mode="append", schema=table.schema(), commit_properties=_versioned(version))


def _versioned(version: int) -> CommitProperties:
    return CommitProperties(app_transactions=[Transaction(APP_ID, version)])


def _evolve(table: DeltaTable, schema: pa.Schema) -> None:
    """Add to the log's schema the columns a newer release's parts have (an older part reads them as nulls)."""
    logged = set(pa.schema(table.schema().to_arrow()).names)
    missing = [Field.from_arrow(f) for f in _plain(schema) if f.name not in logged]
    if missing:
        table.alter.add_columns(missing)


_WIDER: Final = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64(), pa.uint64(): pa.int64()}
"""Delta has no unsigned integers: a summary's counts (Polars' ``len()`` is a UInt32) are declared as the wider
signed type, which readers widen to (a UInt64 as an Int64: no count comes near 2^63)."""


def _plain(schema: pa.Schema) -> pa.Schema:
    """``schema`` as the log declares it: no metadata, unsigned integers widened."""
    return pa.schema([f.with_type(_WIDER.get(f.type, f.type)) for f in schema])


def _add(table_dir: Path, rel: str, time_column: str | None) -> AddAction:
    path = table_dir / rel
    stat = path.stat()
    return AddAction(
        rel,
        stat.st_size,
        {},
        stat.st_mtime_ns // 1_000_000,
        True,
        json.dumps(_stats(pq.read_metadata(path), time_column)),
    )


def _stats(meta: pq.FileMetaData, time_column: str | None) -> dict[str, Any]:
    """Delta's per-file statistics: rows, and the minimum and maximum of the time column and ``STAT_COLUMNS``
    where every row group has them (a timestamp's maximum rounded up to the millisecond, the stats' precision)."""
    stats: dict[str, Any] = {"numRecords": meta.num_rows}
    names = meta.schema.to_arrow_schema().names
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for name in (time_column, *STAT_COLUMNS):
        if name is None or name not in names or meta.num_row_groups == 0:
            continue
        index = names.index(name)
        columns = [meta.row_group(i).column(index).statistics for i in range(meta.num_row_groups)]
        if not all(c is not None and c.has_min_max for c in columns):
            continue
        lows[name] = _json_value(min(c.min for c in columns), up=False)
        highs[name] = _json_value(max(c.max for c in columns), up=True)
    if lows:
        stats["minValues"], stats["maxValues"] = lows, highs
    return stats


def _json_value(value: Any, *, up: bool) -> Any:
    if isinstance(value, dt.datetime):
        if up and value.microsecond % 1000:
            value += dt.timedelta(microseconds=1000 - value.microsecond % 1000)
        utc = value.astimezone(dt.UTC) if value.tzinfo else value
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode()
    return value
