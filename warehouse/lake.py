"""The Parquet lake: where parts live, how a batch becomes visible all at once, and how readers list them.

Layout: ``<root>/<table>/date=YYYY-MM-DD/cluster=<quoted>/part-<id>.parquet`` (Hive style, readable by any Parquet
engine). A write is a *transaction*: parts are written under ``_tmp/``, then a journal naming every part to add and
every part to remove is written atomically under ``_journal/`` (the commit point), then each added part is hard-linked
to its final path and the journal is deleted. Readers honour pending journals, so they see a transaction either whole
or not at all, and the next writer rolls any pending journal forward. A writer killed before its journal exists
leaves only files in ``_tmp/``, which no reader ever lists.

Snapshot reads. A reader lists parts, then opens them later (a Polars or DuckDB scan). So a commit never deletes a
path a reader may have resolved. The parts it removes are *retired*: a small ``_retired/<ns>-<id>.json`` document
(written atomically once the links exist, before the journal goes) names each by path and identity (inode, size,
mtime), and listings leave those out, so a removed part is invisible from the commit point on but stays readable at
its path. The unlink happens in a later writer's ``recover()`` once the document is older than ``RETIRE_GRACE_S``,
far longer than any read. The ``_tmp/`` names of the parts it adds (which readers of the pending journal read) stay
too, and the same ``recover()`` unlinks those linked into place longer ago than the grace period: every commit has
them, so they are judged by age, not listed (a retired document per commit made every listing slower).
Identities matter because rollup parts are named after their inputs: a name can come back (a setting changed and
changed back) while its old file is still retired, and the new file must be neither hidden nor deleted.
Linking instead of renaming keeps a pending journal's ``_tmp/`` path readable too; on a file system without hard
links the part is renamed (then only a reader racing that rename can miss it). The price: disk space of replaced
parts is freed up to the grace period later, at the first write after it.

Nothing read from disk is trusted. Journal and retired documents are validated: every path must be relative, free
of ``..``, resolve inside the warehouse, and have the right shape (a part under a table directory, a staged file
directly under ``_tmp/``). A torn or invalid document was never a valid commit point (journals are written whole and
renamed into place), so readers skip it with a warning and the next writer moves it to ``_quarantine/`` with a log
line; `warehouse check` lists it. A torn state document is set aside the same way and reads as absent.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import reading
from warehouse.errors import (
    DocumentUnreadable,
    NotAWarehouse,
    WarehouseBusy,
    WarehouseMissing,
    WarehouseUnreadable,
)
from warehouse.files import fsync_dir, write_atomic
from warehouse.schema import EARLIEST, TABLES, Table, latest_plausible, utc_now

log = logging.getLogger(__name__)

MARKER = ".gpuledger-warehouse"
SPANS_KEY = b"gpuledger.series_spans"
PART_GLOB = "part-*.parquet"
COMPRESSION = "zstd"
SUMMARIES_DIR = "_summaries"
"""Derived per-day caches (``warehouse.rollup``), stored as tables ``_summaries/<name>``."""
TMP_DIR, JOURNAL_DIR, RETIRED_DIR, STATE_DIR, QUARANTINE_DIR = "_tmp", "_journal", "_retired", "_state", "_quarantine"
RETIRE_GRACE_S = 15 * 60.0
"""How long a retired part stays readable at its path after the commit that replaced it: longer than any read."""
VERIFY_CHECKSUMS = True
"""Scans check every page's CRC as they decode it (``warehouse.reading``); False only for benchmark baselines."""

_DOC_NAME = re.compile(r"^(\d+)-[0-9a-f]{8}\.json$")
Ident = tuple[int, int, int]
"""A file's identity: inode, size, modification time (ns)."""


@dataclass(frozen=True)
class Partition:
    """One Hive partition of a table: a date (None for undated tables) and a cluster (None when not split)."""

    date: dt.date | None
    cluster: str | None


@dataclass(frozen=True)
class Staged:
    """A part written under ``_tmp/`` that a transaction will link to ``final``."""

    tmp: Path
    final: Path
    rows: int


@dataclass(frozen=True)
class Journal:
    """A transaction: ``adds`` are (staged, final) paths and ``removes`` part paths, relative to the root."""

    adds: tuple[tuple[str, str], ...]
    removes: tuple[str, ...]

    def to_json(self) -> dict[str, list[Any]]:
        return {"adds": [list(pair) for pair in self.adds], "removes": list(self.removes)}


@dataclass(frozen=True)
class _Snapshot:
    journals: dict[str, Journal]
    retired: dict[str, dict[str, frozenset[Ident]]]
    """Per retired document: relative path -> identities retired under that path."""

    @property
    def names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(self.journals), tuple(self.retired)


class Lake:
    """A warehouse directory. Reading needs nothing; writing happens inside ``with lake.writing():``."""

    def __init__(
        self,
        root: Path | str,
        *,
        create: bool = False,
        lock_timeout_s: float = 30.0,
        retire_grace_s: float = RETIRE_GRACE_S,
        stages_for_writer: bool = False,
    ) -> None:
        """``stages_for_writer``: this process may stage parts without holding the lock, for a writer in another
        process that holds it and commits them (a distributed rollup's task); it still never commits."""
        self.root = Path(root)
        self.stages_for_writer = stages_for_writer
        self.lock_timeout_s = lock_timeout_s
        self.retire_grace_s = retire_grace_s
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
        elif not (self.root / MARKER).exists() and _holds_files(self.root):
            raise NotAWarehouse(self.root, MARKER)
        self._real_root = self.root.resolve()
        self._lock_fd: int | None = None
        self._docs: dict[Path, Any] = {}
        """Parsed journal and retired documents by path: they never change once written (unique names)."""
        self._warned: set[Path] = set()

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
        """Every visible part of ``table`` (dates within [start, end] when given), sorted, journals honoured and
        retired parts left out. The listing is retried until no commit began or ended while it was taken."""
        for _ in range(20):
            before = self._snapshot()
            listed = self._list_parts(table, start, end, cluster)
            after = self._snapshot()
            if before.names == after.names:
                return self._visible(table, listed, after, start, end, cluster)
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
        """A lazy frame over the table's parts, pruned by date partition and filtered to [start, end); every page
        it decodes has its CRC checked."""
        files = self.parts(
            table,
            start=start.date() if start else None,
            end=end.date() if end else None,
            cluster=cluster,
        )
        if not files:
            return pl.from_arrow(table.schema.empty_table()).lazy()  # type: ignore[union-attr]
        lf = scan_parts(table, files)
        if table.time_column is not None:
            col = pl.col(table.time_column)
            if start is not None:
                lf = lf.filter(col >= _lit_time(table, start))
            if end is not None:
                lf = lf.filter(col < _lit_end(table, end))
        return lf

    def batches(
        self,
        table: Table,
        *,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[str],
        categorical: bool = True,
    ) -> Iterator[pl.DataFrame]:
        """``columns`` of the rows in [start, end), one part's row group at a time (``reading.batches``: text
        columns as ``Categorical`` by default), for a job that folds a long window in one pass and keeps only what
        it needs of each batch."""
        assert table.time_column is not None
        files = self.parts(table, start=start.date(), end=end.date())
        stamp = pl.col(table.time_column)
        inside = (stamp >= _lit_time(table, start)) & (stamp < _lit_end(table, end))
        wanted = list(dict.fromkeys([*columns, table.time_column]))
        for part in reading.batches(table, files, wanted, categorical=categorical, verify=VERIFY_CHECKSUMS):
            yield part.filter(inside).select(columns)

    def series_spans(self, table: Table, *, now: dt.datetime | None = None) -> pl.DataFrame:
        """First and last time of every series, per cluster, from the summaries in the parts' footers.

        Reads footers only, so it costs per part, not per row; a part without a summary (written by another tool)
        is scanned instead. Date partitions outside [EARLIEST, ``latest_plausible(now)``] are left out: ingest drops
        such rows, and one that an older release stored must not stretch a lifetime (and the rollup) to 1970 or 2100.
        """
        assert table.series and table.time_column
        frames = []
        first_day, last_day = EARLIEST.date(), latest_plausible(now or utc_now()).date()
        for part in self.parts(table, start=first_day, end=last_day):
            blob = (pq.read_schema(part).metadata or {}).get(SPANS_KEY)
            if blob is not None:
                spans = pl.read_ipc(io.BytesIO(base64.b64decode(blob)))
            else:
                spans = _spans(table, scan_parts(table, [part])).collect()
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

    def bad_documents(self) -> list[tuple[Path, str]]:
        """Every journal or retired document that cannot be applied (torn, or naming a path it may not), with why."""
        bad: list[tuple[Path, str]] = []
        for folder in (JOURNAL_DIR, RETIRED_DIR):
            for path in self._doc_paths(folder):
                parsed = self._doc(path)
                if isinstance(parsed, DocumentUnreadable):
                    bad.append((path, parsed.reason))
        return bad

    def _list_parts(self, table: Table, start: dt.date | None, end: dt.date | None, cluster: str | None) -> list[Path]:
        base = self.table_dir(table)
        if not base.is_dir():
            return []
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if _wanted(d, start, end, cluster)]  # pruned before they are listed
            here = Path(dirpath)
            found.extend(here / f for f in filenames if f.startswith("part-") and f.endswith(".parquet"))
        return sorted(found)

    def _visible(
        self,
        table: Table,
        listed: list[Path],
        snapshot: _Snapshot,
        start: dt.date | None,
        end: dt.date | None,
        cluster: str | None,
    ) -> list[Path]:
        retired: dict[str, set[Ident]] = {}
        for entries in snapshot.retired.values():
            for rel, idents in entries.items():
                retired.setdefault(rel, set()).update(idents)
        visible = set(listed)
        if retired:
            for part in listed:
                gone = retired.get(str(part.relative_to(self.root)))
                if gone is not None and ((ident := _ident(part)) is None or ident in gone):
                    visible.discard(part)
        if not snapshot.journals:
            return sorted(visible)
        table_root = self.table_dir(table)
        for journal in snapshot.journals.values():
            for rel in journal.removes:
                visible.discard(self.root / rel)
        for journal in snapshot.journals.values():
            for tmp_rel, final_rel in journal.adds:
                tmp, final = self.root / tmp_rel, self.root / final_rel
                if table_root not in final.parents or not _in_range(self.partition_of(final), start, end, cluster):
                    continue
                staged = _ident(tmp)
                if staged is not None and _ident(final) != staged:
                    visible.discard(final)
                    visible.add(tmp)
                elif final.exists():
                    visible.add(final)
        return sorted(visible)

    def _snapshot(self) -> _Snapshot:
        """The valid pending journals and retired documents now on disk (torn or invalid ones skipped, warned once)."""
        journals: dict[str, Journal] = {}
        retired: dict[str, dict[str, frozenset[Ident]]] = {}
        live: set[Path] = set()
        for folder in (JOURNAL_DIR, RETIRED_DIR):
            for path in self._doc_paths(folder):
                live.add(path)
                parsed = self._doc(path)
                if isinstance(parsed, Journal):
                    journals[path.name] = parsed
                elif isinstance(parsed, dict):
                    retired[path.name] = parsed
                elif isinstance(parsed, DocumentUnreadable) and path not in self._warned:
                    self._warned.add(path)
                    log.warning(
                        "%s; readers skip it until a writer or `gpuledger warehouse check --warehouse %s --quarantine`"
                        " moves it aside",
                        parsed,
                        self.root,
                    )
        for stale in set(self._docs) - live:
            del self._docs[stale]
        return _Snapshot(journals, retired)

    def _doc_paths(self, folder: str) -> list[Path]:
        directory = self.root / folder
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return []
        return [directory / n for n in names if n.endswith(".json") and not n.startswith(".")]

    def _doc(self, path: Path) -> Journal | dict[str, frozenset[Ident]] | DocumentUnreadable | None:
        """The parsed document (cached), DocumentUnreadable when it is torn or invalid, None when it vanished."""
        if path in self._docs:
            cached: Journal | dict[str, frozenset[Ident]] | DocumentUnreadable = self._docs[path]
            return cached
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        parsed: Journal | dict[str, frozenset[Ident]] | DocumentUnreadable
        try:
            data = json.loads(text)
            if path.parent.name == JOURNAL_DIR:
                parsed = self._parse_journal(data)
            else:
                if not _DOC_NAME.match(path.name):
                    raise ValueError(f"its name {path.name!r} does not say when it was written")
                parsed = self._parse_retired(data)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            kind = "journal" if path.parent.name == JOURNAL_DIR else "retired-parts document"
            parsed = DocumentUnreadable(path, kind, str(exc) or type(exc).__name__)
        self._docs[path] = parsed
        return parsed

    def _parse_journal(self, data: object) -> Journal:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("adds"), list)
            or not isinstance(data.get("removes"), list)
        ):
            raise ValueError('not an object with "adds" and "removes" lists')
        adds = []
        for pair in data["adds"]:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ValueError(f"an add is not a [staged, final] pair: {pair!r}")
            adds.append((self._confined(pair[0], staged=True), self._confined(pair[1])))
        return Journal(tuple(adds), tuple(self._confined(rel) for rel in data["removes"]))

    def _parse_retired(self, data: object) -> dict[str, frozenset[Ident]]:
        if not isinstance(data, dict) or not isinstance(data.get("retired"), list):
            raise ValueError('not an object with a "retired" list')
        out: dict[str, set[Ident]] = {}
        for entry in data["retired"]:
            if not (isinstance(entry, list) and len(entry) == 4 and all(isinstance(n, int) for n in entry[1:])):
                raise ValueError(f"an entry is not [path, inode, size, mtime_ns]: {entry!r}")
            rel = entry[0]
            is_staged = isinstance(rel, str) and rel.startswith(f"{TMP_DIR}/")
            out.setdefault(self._confined(rel, staged=is_staged), set()).add((entry[1], entry[2], entry[3]))
        return {rel: frozenset(idents) for rel, idents in out.items()}

    def _confined(self, rel: object, *, staged: bool = False) -> str:
        """``rel`` when it is a part path under a table directory (``staged``: a file directly under ``_tmp/``)
        that stays inside the warehouse; otherwise ValueError naming it."""
        if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
            raise ValueError(f"names a path that is not a relative path: {rel!r}")
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or str(pure) != rel:
            raise ValueError(f"names a path outside the warehouse: {rel!r}")
        pieces = pure.parts
        if staged:
            shaped = len(pieces) == 2 and pieces[0] == TMP_DIR
            where = f"directly under {TMP_DIR}/"
        else:
            dirs = pieces[2:-1] if pieces[0] == SUMMARIES_DIR else pieces[1:-1]
            shaped = (
                (pieces[0] in TABLES or (pieces[0] == SUMMARIES_DIR and len(pieces) >= 3))
                and pieces[-1].startswith("part-")
                and pieces[-1].endswith(".parquet")
                and all(d.startswith(("date=", "cluster=")) for d in dirs)
            )
            where = "a part under a table directory"
        if not shaped:
            raise ValueError(f"names a path that is not {where}: {rel!r}")
        if not (self.root / rel).resolve().is_relative_to(self._real_root):
            raise ValueError(f"names a path that resolves outside the warehouse: {rel!r}")
        return rel

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
        """Finish every committed transaction a killed writer left behind (returns how many), set aside torn or
        invalid journals, unlink retired files past the grace period and clear orphaned temp files."""
        self._require_lock()
        for path, _reason in self.bad_documents():
            self._set_aside(path, self._doc(path))
        snapshot = self._snapshot()
        for name, journal in snapshot.journals.items():
            match = _DOC_NAME.match(name)
            self._apply(journal, int(match.group(1)) if match else time.time_ns())
            (self.root / JOURNAL_DIR / name).unlink(missing_ok=True)
        keep = self._expire_retired()
        self._expire_staged(keep)
        return len(snapshot.journals)

    def _expire_staged(self, keep: set[str]) -> None:
        """Clear ``_tmp/``: orphans of killed writers and unfinished journals (files never linked into place) at
        once, and the staged names of committed parts (a reader of their pending journal may still read one) once
        linked longer ago than the grace period. Staged names are not listed in retired documents, since every
        commit has them: the link count and the link time say they are done with."""
        tmp = self.root / TMP_DIR
        if not tmp.is_dir():
            return
        cutoff = time.time_ns() - int(self.retire_grace_s * 1e9)
        for entry in tmp.iterdir():
            if f"{TMP_DIR}/{entry.name}" in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat()
                if stat.st_nlink == 1 or stat.st_ctime_ns <= cutoff:  # ctime: when it was linked, at the commit
                    entry.unlink()

    def stage(self, table: Table, partition: Partition, data: pa.Table, name: str | None = None) -> Staged:
        """Write ``data`` as a complete Parquet file under ``_tmp/``; invisible until committed."""
        if not self.stages_for_writer:
            self._require_lock()
        if table.series and table.time_column:
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), SPANS_KEY: _spans_blob(table, data)})
        final = self.new_part_path(table, partition, name)
        tmp = self.root / TMP_DIR / f"{uuid.uuid4().hex}.parquet"
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
        journal = Journal(
            tuple((str(s.tmp.relative_to(self.root)), str(s.final.relative_to(self.root))) for s in adds),
            tuple(str(Path(r).relative_to(self.root)) for r in removes),
        )
        for tmp_rel, final_rel in journal.adds:
            self._confined(tmp_rel, staged=True)
            self._confined(final_rel)
        for rel in journal.removes:
            self._confined(rel)
        jdir = self.root / JOURNAL_DIR
        jdir.mkdir(exist_ok=True)
        version = time.time_ns()
        name = f"{version}-{uuid.uuid4().hex[:8]}.json"
        pending = self.root / TMP_DIR / f"{name}.pending"
        pending.parent.mkdir(exist_ok=True)
        with pending.open("w") as handle:
            json.dump(journal.to_json(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(pending, jdir / name)
        fsync_dir(jdir)
        self._apply(journal, version)
        (jdir / name).unlink()

    def _apply(self, journal: Journal, version: int) -> None:
        """Link the adds into place, retire what the journal replaces and record both in the tables' Delta logs;
        safe to run again after a crash (``version``, the journal's time, makes the Delta commits idempotent)."""
        staged_for = {final: tmp for tmp, final in journal.adds}
        retired: list[list[Any]] = []
        for rel in journal.removes:
            ident = _ident(self.root / rel)
            if ident is None:
                continue
            tmp_rel = staged_for.get(rel)
            if tmp_rel is not None and _ident(self.root / tmp_rel) == ident:
                continue  # a re-run: this path already holds the journal's own new part
            retired.append([rel, *ident])
        touched: set[Path] = set()
        for tmp_rel, final_rel in journal.adds:
            tmp, final = self.root / tmp_rel, self.root / final_rel
            staged = _ident(tmp)
            if staged is None:
                continue
            if _ident(final) != staged:
                final.parent.mkdir(parents=True, exist_ok=True)
                touched.add(final.parent)
                _link_into_place(tmp, final)
        for directory in touched:
            fsync_dir(directory)
        if retired:
            rdir = self.root / RETIRED_DIR
            rdir.mkdir(exist_ok=True)
            write_atomic(rdir / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json", json.dumps({"retired": retired}))
        self._record_delta(journal, version)

    def _record_delta(self, journal: Journal, version: int) -> None:
        """One Delta commit per table the journal touches (``warehouse.delta_log``). A log that cannot be written
        does not fail the transaction, which gpuledger's readers already see: the warning says how to mend it."""
        from warehouse import delta_log  # deltalake costs readers nothing

        changes: dict[str, tuple[Table, list[str], list[str]]] = {}
        for rel, added in [*((final, True) for _tmp, final in journal.adds), *((r, False) for r in journal.removes)]:
            table = table_of(rel)
            _, adds, removes = changes.setdefault(table.name, (table, [], []))
            (adds if added else removes).append(rel[len(table.name) + 1 :])
        for table, adds, removes in changes.values():
            table_dir = self.table_dir(table)
            try:
                schema = self.delta_schema(table, [table_dir / rel for rel in adds])
                if schema is None:
                    continue
                delta_log.record(
                    table_dir,
                    schema,
                    adds=adds,
                    removes=removes,
                    version=version,
                    time_column=table.time_column,
                    visible=lambda table=table, table_dir=table_dir: [  # type: ignore[misc]
                        str(p.relative_to(table_dir)) for p in self.parts(table)
                    ],
                )
            except delta_log.ERRORS as exc:
                log.warning(
                    "the Delta log of %s was not updated (%s); gpuledger reads the table as before, and "
                    "`gpuledger warehouse migrate --warehouse %s` brings the log back in line",
                    table_dir,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    self.root,
                )

    def summary_tables(self) -> list[Table]:
        """Every daily summary stored, kept or not."""
        root = self.root / SUMMARIES_DIR
        if not root.is_dir():
            return []
        return [
            summary_table_named(d.name) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
        ]

    def delta_schema(self, table: Table, added: Sequence[Path] = ()) -> pa.Schema | None:
        """The columns a table's Delta log declares: the contract's, or for a summary (a cache whose columns are its
        own) the part just ``added``'s, else a visible part's; None for a summary with no part."""
        if table.schema.names:
            return table.schema
        parts = [p for p in added if p.is_file()] or self.parts(table)
        return pq.read_schema(parts[-1]) if parts else None

    def _expire_retired(self) -> set[str]:
        """Unlink the files of retired documents older than the grace period (when still the same file) and the
        documents; returns the paths the younger documents still keep."""
        keep: set[str] = set()
        now = time.time_ns()
        touched: set[Path] = set()
        for path in self._doc_paths(RETIRED_DIR):
            entries = self._doc(path)
            if not isinstance(entries, dict):
                continue
            match = _DOC_NAME.match(path.name)
            assert match is not None
            if now - int(match.group(1)) < self.retire_grace_s * 1e9:
                keep.update(entries)
                continue
            for rel, idents in entries.items():
                file = self.root / rel
                if _ident(file) in idents:
                    file.unlink(missing_ok=True)
                    touched.add(file.parent)
            path.unlink(missing_ok=True)
        rdir = self.root / RETIRED_DIR
        if rdir.is_dir():
            for leftover in rdir.glob(".*.tmp"):  # a write_atomic killed mid-write (we hold the lock)
                leftover.unlink(missing_ok=True)
        for directory in sorted(touched, key=lambda p: len(p.parts), reverse=True):
            _remove_empty_dirs(directory, stop=self.root)
        return keep

    def _set_aside(self, path: Path, problem: object) -> Path | None:
        """Move a torn or invalid document to ``_quarantine/`` (same relative path); returns where it went."""
        target = self.root / QUARANTINE_DIR / path.relative_to(self.root)
        if target.exists():
            target = target.with_name(f"{target.stem}.{uuid.uuid4().hex[:8]}{target.suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return None
        self._docs.pop(path, None)
        log.warning("%s; moved it to %s", problem, target)
        return target

    # ----------------------------------------------------------------------------------------------- state

    def read_state(self, name: str) -> dict[str, Any] | None:
        """A small JSON document a job keeps beside the data (a scrape watermark, alert state), or None.

        State is a cache or a watermark that its callers rebuild, so a torn document is set aside under
        ``_quarantine/_state/`` (logged) and reads as absent."""
        path = self._state_path(name)
        try:
            with path.open("rb") as handle:
                inode = os.fstat(handle.fileno()).st_ino
                text = handle.read()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            problem = DocumentUnreadable(path, "state document", str(exc) or type(exc).__name__)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_ino == inode:  # not replaced by a writer since it was read
                    self._set_aside(path, problem)
            return None
        return data

    def write_state(self, name: str, value: dict[str, Any]) -> None:
        """Replace the state document ``name`` atomically (written whole, then renamed into place)."""
        path = self._state_path(name)
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str))

    def _state_path(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.root / STATE_DIR / f"{safe}.json"

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("warehouse writes must happen inside `with lake.writing():`")


def summary_table_named(name: str) -> Table:
    """Where the daily summary ``name`` lives: ``_summaries/<name>/date=.../cluster=...`` (a cache, outside the
    contract: its columns are the summary's own)."""
    return Table(
        name=f"{SUMMARIES_DIR}/{name}",
        schema=pa.schema([]),
        key=(),
        required=(),
        time_column="ts",
        partition_by_cluster=True,
    )


def table_of(rel: str) -> Table:
    """The table a part path (relative to the root, already confined) belongs to."""
    pieces = rel.split("/")
    return summary_table_named(pieces[1]) if pieces[0] == SUMMARIES_DIR else TABLES[pieces[0]]


def scan_parts(table: Table, files: Sequence[Path]) -> pl.LazyFrame:
    """A lazy frame over ``files`` (parts of ``table``) whose reads check every decoded page's CRC, so a damaged
    page fails the read that meets it instead of decoding into wrong numbers; columns a part lacks read as nulls."""
    if not VERIFY_CHECKSUMS:
        return pl.scan_parquet([str(f) for f in files], hive_partitioning=False, missing_columns="insert")
    return reading.scan(table, files)


def read_part(path: Path) -> pl.DataFrame:
    """One whole part with every page's CRC checked (for parts outside the table contract, such as summaries).

    ``ParquetFile``, not ``pq.read_table``: that goes through ``pyarrow.dataset``, whose import imports pandas
    (about 0.5 s of every report)."""
    with pq.ParquetFile(path, page_checksum_verification=VERIFY_CHECKSUMS) as part:
        frame = pl.from_arrow(part.read())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _ident(path: Path) -> Ident | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _link_into_place(tmp: Path, final: Path) -> bool:
    """Give ``tmp``'s file the name ``final`` too (atomically replacing an older file of that name); False when the
    file system has no hard links and the file was renamed instead."""
    try:
        if not final.exists():
            os.link(tmp, final)
            return True
        linked = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.link")
        os.link(tmp, linked)
        os.replace(linked, final)
        return True
    except FileExistsError:
        return _link_into_place(tmp, final)
    except OSError:
        os.replace(tmp, final)
        return False


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
    CRC per page so every read (``scan_parts``) and `warehouse check` catch damage that would still decode. All
    are standard Parquet encodings that DuckDB, Polars, Spark and Trino read."""
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


def _wanted(folder: str, start: dt.date | None, end: dt.date | None, cluster: str | None) -> bool:
    """Whether a listing descends into ``folder``: a date partition within [start, end], the cluster asked for (never
    the Delta log)."""
    if folder.startswith("_"):
        return False
    if folder.startswith("date="):
        day = dt.date.fromisoformat(folder[5:])
        return not ((start and day < start) or (end and day > end))
    if cluster is not None and folder.startswith("cluster="):
        return unquote(folder[8:]) == cluster
    return True


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


def _holds_files(root: Path) -> bool:
    """Whether a directory holds anything but what a fresh volume comes with (``lost+found``, hidden files): a
    directory of other files is not read or written as a warehouse."""
    return any(entry.name != "lost+found" and not entry.name.startswith(".") for entry in root.iterdir())


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    while directory != stop and directory.name.startswith(("date=", "cluster=")):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
