"""The Parquet lake: where parts live, how a batch becomes visible all at once, and how readers list them.

Layout: ``<root>/<table>/date=YYYY-MM-DD/cluster=<quoted>/part-<id>.parquet`` (Hive style, readable by any Parquet
engine). A write is a *transaction*: parts are written under ``_tmp/``, then a journal naming every part to add and
every part to remove is written atomically under ``_journal/``, then the parts are renamed into place and the journal
is deleted. Readers honour pending journals, so they see a transaction either whole or not at all, and the next
writer rolls any pending journal forward. A writer killed before its journal exists leaves only files in ``_tmp/``,
which no reader ever lists.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.errors import WarehouseBusy, WarehouseMissing, WarehouseUnreadable
from warehouse.files import fsync_dir, write_atomic
from warehouse.schema import TABLES, Table

MARKER = ".gpuledger-warehouse"
SPANS_KEY = b"gpuledger.series_spans"
PART_GLOB = "part-*.parquet"
COMPRESSION = "zstd"


@dataclass(frozen=True)
class Partition:
    """One Hive partition of a table: a date (None for undated tables) and a cluster (None when not split)."""

    date: dt.date | None
    cluster: str | None


@dataclass(frozen=True)
class Staged:
    """A part written under ``_tmp/`` that a transaction will rename to ``final``."""

    tmp: Path
    final: Path
    rows: int


class Lake:
    """A warehouse directory. Reading needs nothing; writing happens inside ``with lake.writing():``."""

    def __init__(self, root: Path | str, *, create: bool = False, lock_timeout_s: float = 30.0) -> None:
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        if not self.root.exists():
            if not create:
                raise WarehouseMissing(self.root)
            try:
                self.root.mkdir(parents=True)
            except OSError as exc:
                raise WarehouseUnreadable(self.root, exc.strerror or str(exc)) from exc
        if not self.root.is_dir():
            raise WarehouseUnreadable(self.root, "it is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise WarehouseUnreadable(self.root, "it is not readable")
        if create:
            if not os.access(self.root, os.W_OK):
                raise WarehouseUnreadable(self.root, "it is not writable")
            (self.root / MARKER).touch(exist_ok=True)
        self._lock_fd: int | None = None

    # ----------------------------------------------------------------------------------------------- layout

    def table_dir(self, table: Table) -> Path:
        return self.root / table.name

    def partition_dir(self, table: Table, partition: Partition) -> Path:
        path = self.table_dir(table)
        if table.time_column is not None:
            assert partition.date is not None, f"{table.name} is partitioned by date"
            path = path / f"date={partition.date.isoformat()}"
        if table.partition_by_cluster:
            assert partition.cluster is not None, f"{table.name} is partitioned by cluster"
            path = path / f"cluster={quote(partition.cluster, safe='')}"
        return path

    def new_part_path(self, table: Table, partition: Partition, name: str | None = None) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        return self.partition_dir(table, partition) / (name or f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet")

    @staticmethod
    def partition_of(path: Path) -> Partition:
        """The partition a part lies in, read back from its Hive directory names."""
        date: dt.date | None = None
        cluster: str | None = None
        for piece in path.parts:
            if piece.startswith("date="):
                date = dt.date.fromisoformat(piece[5:])
            elif piece.startswith("cluster="):
                cluster = unquote(piece[8:])
        return Partition(date, cluster)

    # ----------------------------------------------------------------------------------------------- reading

    def parts(
        self,
        table: Table,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        cluster: str | None = None,
    ) -> list[Path]:
        """Every visible part of ``table`` (dates within [start, end] when given), sorted, journals honoured."""
        for _ in range(20):
            before = self._journals()
            listed = self._list_parts(table, start, end, cluster)
            after = self._journals()
            if before == after:
                return self._apply_pending(table, listed, after, start, end, cluster)
            time.sleep(0.01)
        raise WarehouseBusy(self.root)

    def version(self) -> str:
        """A cheap token that changes whenever the visible data changes: the path, size and modification time of
        every visible part (no part is opened). Readers key caches on it."""
        digest = hashlib.sha256()
        for table in TABLES.values():
            for part in self.parts(table):
                with contextlib.suppress(FileNotFoundError):
                    stat = part.stat()
                    digest.update(f"{part.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]

    def partitions(self, table: Table) -> list[Partition]:
        return sorted(
            {self.partition_of(p.relative_to(self.root)) for p in self.parts(table)},
            key=lambda p: (p.date or dt.date.min, p.cluster or ""),
        )

    def scan(
        self,
        table: Table,
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        cluster: str | None = None,
    ) -> pl.LazyFrame:
        """A lazy frame over the table's parts, pruned by date partition and filtered to [start, end)."""
        files = self.parts(
            table,
            start=start.date() if start else None,
            end=end.date() if end else None,
            cluster=cluster,
        )
        if not files:
            return pl.from_arrow(table.schema.empty_table()).lazy()  # type: ignore[union-attr]
        lf = pl.scan_parquet([str(f) for f in files], hive_partitioning=False, missing_columns="insert")
        if table.time_column is not None:
            col = pl.col(table.time_column)
            if start is not None:
                lf = lf.filter(col >= _lit_time(table, start))
            if end is not None:
                lf = lf.filter(col < _lit_end(table, end))
        return lf

    def series_spans(self, table: Table) -> pl.DataFrame:
        """First and last time of every series, per cluster, from the summaries in the parts' footers.

        Reads footers only, so it costs per part, not per row; a part without a summary (written by another tool)
        is scanned instead.
        """
        assert table.series and table.time_column
        frames = []
        for part in self.parts(table):
            blob = (pq.read_schema(part).metadata or {}).get(SPANS_KEY)
            if blob is not None:
                spans = pl.read_ipc(io.BytesIO(base64.b64decode(blob)))
            else:
                spans = _spans(table, pl.scan_parquet(part, hive_partitioning=False)).collect()
            cluster = self.partition_of(part.relative_to(self.root)).cluster
            frames.append(spans.with_columns(pl.lit(cluster, pl.String).alias("cluster")))
        if not frames:
            empty = {c: pl.from_arrow(table.schema.empty_table()).schema[c] for c in table.series}  # type: ignore[union-attr]
            time_type = pl.Datetime("us", "UTC")
            return pl.DataFrame(schema={"cluster": pl.String, **empty, "first": time_type, "last": time_type})
        return (
            pl.concat(frames)
            .group_by("cluster", *table.series)
            .agg(pl.col("first").min(), pl.col("last").max())
            .select("cluster", *table.series, "first", "last")
        )

    def _list_parts(self, table: Table, start: dt.date | None, end: dt.date | None, cluster: str | None) -> list[Path]:
        base = self.table_dir(table)
        if not base.is_dir():
            return []
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            name = here.name
            if name.startswith("date="):
                day = dt.date.fromisoformat(name[5:])
                if (start and day < start) or (end and day > end):
                    dirnames.clear()
                    continue
            if cluster is not None and name.startswith("cluster=") and unquote(name[8:]) != cluster:
                dirnames.clear()
                continue
            found.extend(here / f for f in filenames if f.startswith("part-") and f.endswith(".parquet"))
        return sorted(found)

    def _apply_pending(
        self,
        table: Table,
        listed: list[Path],
        journals: dict[str, dict[str, list[Any]]],
        start: dt.date | None,
        end: dt.date | None,
        cluster: str | None,
    ) -> list[Path]:
        if not journals:
            return listed
        visible = set(listed)
        table_root = self.table_dir(table)
        for journal in journals.values():
            for rel in journal["removes"]:
                visible.discard(self.root / rel)
            for tmp_rel, final_rel in journal["adds"]:
                final = self.root / final_rel
                if table_root not in final.parents or not _in_range(self.partition_of(final), start, end, cluster):
                    continue
                if final.exists():
                    visible.add(final)
                elif (self.root / tmp_rel).exists():
                    visible.add(self.root / tmp_rel)
        return sorted(visible)

    def _journals(self) -> dict[str, dict[str, list[Any]]]:
        jdir = self.root / "_journal"
        if not jdir.is_dir():
            return {}
        out: dict[str, dict[str, list[Any]]] = {}
        for entry in sorted(jdir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                out[entry.name] = json.loads(entry.read_text())
        return out

    # ----------------------------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def writing(self) -> Iterator[Lake]:
        """Hold the warehouse's writer lock; roll pending journals forward and clear orphaned temp files."""
        if self._lock_fd is not None:
            yield self
            return
        try:
            (self.root / MARKER).touch(exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WarehouseUnreadable(self.root, f"it is not writable ({exc.strerror})") from None
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise WarehouseBusy(self.root) from exc
                time.sleep(0.05)
        self._lock_fd = fd
        try:
            self.recover()
            yield self
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def recover(self) -> int:
        """Finish every committed transaction a killed writer left behind; returns how many were finished."""
        self._require_lock()
        journals = self._journals()
        for name, journal in journals.items():
            self._apply(journal)
            (self.root / "_journal" / name).unlink(missing_ok=True)
        tmp = self.root / "_tmp"
        if tmp.is_dir():
            for orphan in tmp.iterdir():
                orphan.unlink(missing_ok=True)
        return len(journals)

    def stage(self, table: Table, partition: Partition, data: pa.Table, name: str | None = None) -> Staged:
        """Write ``data`` as a complete Parquet file under ``_tmp/``; invisible until committed."""
        self._require_lock()
        if table.series and table.time_column:
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), SPANS_KEY: _spans_blob(table, data)})
        final = self.new_part_path(table, partition, name)
        tmp = self.root / "_tmp" / f"{uuid.uuid4().hex}.parquet"
        tmp.parent.mkdir(exist_ok=True)
        with tmp.open("wb") as handle:
            pq.write_table(data, handle, **_write_options(data.schema))
            handle.flush()
            os.fsync(handle.fileno())
        return Staged(tmp, final, data.num_rows)

    def commit(self, adds: Sequence[Staged], removes: Sequence[Path] = ()) -> None:
        """Make ``adds`` visible and ``removes`` invisible in one step (the journal write is the commit point)."""
        self._require_lock()
        if not adds and not removes:
            return
        journal: dict[str, list[Any]] = {
            "adds": [[str(s.tmp.relative_to(self.root)), str(s.final.relative_to(self.root))] for s in adds],
            "removes": [str(Path(r).relative_to(self.root)) for r in removes],
        }
        jdir = self.root / "_journal"
        jdir.mkdir(exist_ok=True)
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"
        pending = self.root / "_tmp" / f"{name}.pending"
        pending.parent.mkdir(exist_ok=True)
        with pending.open("w") as handle:
            json.dump(journal, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(pending, jdir / name)
        fsync_dir(jdir)
        self._apply(journal)
        (jdir / name).unlink()

    def _apply(self, journal: dict[str, list[Any]]) -> None:
        touched: set[Path] = set()
        for tmp_rel, final_rel in journal["adds"]:
            tmp, final = self.root / tmp_rel, self.root / final_rel
            if tmp.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                touched.add(final.parent)
        for rel in journal["removes"]:
            (self.root / rel).unlink(missing_ok=True)
            touched.add((self.root / rel).parent)
        for directory in touched:
            if directory.exists():
                fsync_dir(directory)
        for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            _remove_empty_dirs(directory, stop=self.root)

    # ----------------------------------------------------------------------------------------------- state

    def read_state(self, name: str) -> dict[str, Any] | None:
        """A small JSON document a job keeps beside the data (a scrape watermark, alert state), or None."""
        path = self._state_path(name)
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return data

    def write_state(self, name: str, value: dict[str, Any]) -> None:
        """Replace the state document ``name`` atomically (written whole, then renamed into place)."""
        path = self._state_path(name)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))

    def _state_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / "_state" / f"{safe}.json"

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("warehouse writes must happen inside `with lake.writing():`")


def _spans(table: Table, rows: pl.LazyFrame) -> pl.LazyFrame:
    assert table.time_column is not None
    time = pl.col(table.time_column)
    return rows.group_by(*table.series).agg(time.min().alias("first"), time.max().alias("last"))


def _spans_blob(table: Table, data: pa.Table) -> bytes:
    """Every series' first and last time in ``data``, as base64 Arrow IPC for the part's footer."""
    frame = pl.from_arrow(data.select([*table.series, table.time_column]))
    assert isinstance(frame, pl.DataFrame)
    buffer = io.BytesIO()
    _spans(table, frame.lazy()).collect().write_ipc(buffer, compression="zstd")
    return base64.b64encode(buffer.getvalue())


def _write_options(schema: pa.Schema) -> dict[str, Any]:
    """How parts are encoded: timestamps as deltas (a GPU's samples are evenly spaced, so deltas are tiny), floats
    byte-stream-split (telemetry noise defeats dictionaries), everything else dictionary-encoded; zstd on top, and a
    CRC per page so `warehouse check` catches damage that would still decode. All are standard Parquet encodings
    that DuckDB, Polars, Spark and Trino read."""
    encodings: dict[str, str] = {}
    for fld in schema:
        if pa.types.is_timestamp(fld.type):
            encodings[fld.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(fld.type):
            encodings[fld.name] = "BYTE_STREAM_SPLIT"
    return {
        "compression": COMPRESSION,
        "row_group_size": 1 << 20,
        "write_page_checksum": True,
        "use_dictionary": [name for name in schema.names if name not in encodings],
        "column_encoding": encodings,
    }


def _lit_time(table: Table, value: dt.datetime) -> pl.Expr:
    if table.schema.field(table.time_column).type == pa.date32():
        return pl.lit(value.date())
    return pl.lit(value.astimezone(dt.UTC)).cast(pl.Datetime("us", "UTC"))


def _lit_end(table: Table, end: dt.datetime) -> pl.Expr:
    """The exclusive upper bound for ``end``: a row of a date-typed table stands for its whole day, so a day that
    starts before ``end`` is in (a window ending at 12:00 includes that day's ``nodes`` row)."""
    if table.schema.field(table.time_column).type == pa.date32():
        utc = end.astimezone(dt.UTC)
        midnight = utc.time() == dt.time()
        return pl.lit(utc.date() if midnight else utc.date() + dt.timedelta(days=1))
    return _lit_time(table, end)


def _in_range(partition: Partition, start: dt.date | None, end: dt.date | None, cluster: str | None) -> bool:
    if partition.date is not None and ((start and partition.date < start) or (end and partition.date > end)):
        return False
    return not (cluster is not None and partition.cluster is not None and partition.cluster != cluster)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and directory.name.startswith(("date=", "cluster=")):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
