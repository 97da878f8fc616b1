"""Keeping the lake healthy: verify parts (and quarantine corrupt ones), compact small parts, drop old partitions."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.errors import CorruptPart
from warehouse.lake import Lake, Staged, scan_parts
from warehouse.schema import INGEST_TABLES, TABLES, Table

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


def verify_part(path: Path, *, full: bool = True) -> str | None:
    """Why the part cannot be read, or None. ``full`` decodes every page and checks its CRC, not only the footer."""
    try:
        handle = pq.ParquetFile(path, page_checksum_verification=full)
        if full:
            for i in range(handle.num_row_groups):
                handle.read_row_group(i)
    except (OSError, pa.ArrowException) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def check(lake: Lake, *, quarantine: bool = False, progress: Progress | None = None) -> list[Problem]:
    """Every unreadable part, torn or invalid journal and retired-parts document; with ``quarantine``, each is moved
    under ``_quarantine/`` (same relative path). Retired parts are not listed, so not checked.

    Quarantining holds the writer lock from the start: taking it sets the bad documents aside (listed first, so they
    are reported), and pending journals are rolled forward before parts are listed and no part moves between being
    found and being moved aside.
    """
    documents = [Problem(path, reason) for path, reason in lake.bad_documents()]
    with lake.writing() if quarantine else contextlib.nullcontext():
        parts = [p for table in TABLES.values() for p in lake.parts(table)]
        problems: list[Problem] = []
        for i, part in enumerate(parts):
            reason = verify_part(part)
            if reason:
                problems.append(Problem(part, reason))
            if progress:
                progress(i + 1, len(parts))
        if quarantine and problems:
            lake.commit([], removes=[p.path for p in problems])  # gone from the tables' Delta logs too
        problems = documents + problems
        if quarantine:
            for problem in problems:
                if not problem.path.exists():
                    continue  # a document the writer lock already set aside
                target = lake.root / "_quarantine" / problem.path.relative_to(lake.root)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(problem.path, target)
    return problems


@dataclass(frozen=True)
class Migrated:
    """What ``migrate`` did to one table's Delta log."""

    table: str
    created: bool
    added: int
    removed: int
    rebuilt: bool
    """The log could not be read: it was moved under ``_quarantine/`` and made anew."""


def migrate(lake: Lake, *, progress: Progress | None = None) -> list[Migrated]:
    """Give every table a Delta log that lists exactly its visible parts (README "Delta Lake log"): made where
    there is none (a warehouse an older release wrote), brought in line where an older release wrote parts since,
    and made anew where it cannot be read. Running it again changes nothing."""
    from warehouse import delta_log

    done: list[Migrated] = []
    with lake.writing():
        tables = [*TABLES.values(), *lake.summary_tables()]
        for i, table in enumerate(tables):
            table_dir = lake.table_dir(table)
            schema = lake.delta_schema(table)
            visible = [str(p.relative_to(table_dir)) for p in lake.parts(table)]
            if schema is not None and (visible or delta_log.has_log(table_dir)):
                done.append(_migrate_table(lake, table, schema, visible))
            if progress:
                progress(i + 1, len(tables))
    return done


def _migrate_table(lake: Lake, table: Table, schema: pa.Schema, visible: list[str]) -> Migrated:
    from warehouse import delta_log

    table_dir = lake.table_dir(table)
    rebuilt = False
    try:
        synced = delta_log.sync(table_dir, schema, visible, version=time.time_ns(), time_column=table.time_column)
    except delta_log.ERRORS:
        target = lake.root / "_quarantine" / table_dir.relative_to(lake.root) / f"{delta_log.LOG_DIR}.{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(table_dir / delta_log.LOG_DIR, target)
        rebuilt = True
        synced = delta_log.sync(table_dir, schema, visible, version=time.time_ns(), time_column=table.time_column)
    return Migrated(table.name, synced.created, synced.added, synced.removed, rebuilt)


def first_corrupt(lake: Lake) -> CorruptPart | None:
    """The error for the first unreadable part (footers first: cheap; then full decode)."""
    parts = [p for table in TABLES.values() for p in lake.parts(table)]
    for full in (False, True):
        for part in parts:
            reason = verify_part(part, full=full)
            if reason and part.exists():  # a part that vanished is not corrupt
                return CorruptPart(part, reason)
    return None


@dataclass(frozen=True)
class CompactResult:
    partitions: int
    parts_before: int
    parts_after: int


def compact(lake: Lake, *, target_rows: int = 4_000_000, progress: Progress | None = None) -> CompactResult:
    """Merge each partition's small parts into parts of about ``target_rows`` rows, one transaction per partition."""
    merged_partitions = before = after = 0
    with lake.writing():
        work = [(t, p) for name in INGEST_TABLES for t in [TABLES[name]] for p in lake.partitions(t)]
        for i, (table, partition) in enumerate(work):
            parts = lake.parts(table, start=partition.date, end=partition.date, cluster=partition.cluster)
            parts = [p for p in parts if Lake.partition_of(p.relative_to(lake.root)) == partition]
            small = [p for p in parts if pq.ParquetFile(p).metadata.num_rows < target_rows]
            if len(small) > 1:
                staged = _merge(lake, table, small, target_rows)
                lake.commit(staged, removes=small)
                merged_partitions += 1
                before += len(small)
                after += len(staged)
            if progress:
                progress(i + 1, len(work))
    return CompactResult(merged_partitions, before, after)


def _merge(lake: Lake, table: Table, parts: list[Path], target_rows: int) -> list[Staged]:
    partition = Lake.partition_of(parts[0].relative_to(lake.root))
    frame = scan_parts(table, parts).collect()
    frame = frame.sort(list(table.key), nulls_last=True)
    staged = []
    for offset in range(0, frame.height, target_rows):
        chunk = frame.slice(offset, target_rows).to_arrow().cast(table.schema)
        staged.append(lake.stage(table, partition, chunk))
    return staged


def prune(lake: Lake, *, keep_days: int, today: dt.date) -> int:
    """Drop every date partition older than ``keep_days`` before ``today``; returns the parts removed."""
    cutoff = today - dt.timedelta(days=keep_days)
    with lake.writing():
        old = [
            p
            for table in TABLES.values()
            if table.time_column is not None
            for p in lake.parts(table, end=cutoff - dt.timedelta(days=1))
        ]
        lake.commit([], removes=old)
    return len(old)


def _duckdb_errors() -> tuple[type[Exception], ...]:
    """DuckDB's error when DuckDB is loaded: code that never imported it raised none, and importing it here would
    cost every report about 0.1 s."""
    duckdb = sys.modules.get("duckdb")
    return () if duckdb is None else (duckdb.Error,)


@contextlib.contextmanager
def diagnosing(lake: Lake) -> Iterator[None]:
    """Turn a read failure caused by a corrupt part into CorruptPart naming the file; other errors pass through."""
    try:
        yield
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError, *_duckdb_errors()) as exc:
        found = first_corrupt(lake)
        if found is not None:
            raise found from exc
        raise
