"""The node agent loop: sample on a fixed interval, buffer, flush to the warehouse, spool when it cannot.

- Samples are taken at ``start + k * interval`` (no drift), buffered, and flushed every ``flush_every_s``.
- A flush that fails (warehouse unwritable, disk full) writes the batch to a bounded spool directory as Arrow IPC
  files: written under a hidden name, each file fsynced, then the batch directory, renamed into place and the spool
  fsynced, so a power cut leaves a whole batch or none. Every later successful flush first replays the spool, oldest
  first, and deletes each spooled batch only after it is stored. When the spool would exceed its bound, the oldest
  batches are dropped and the loss is logged.
- A spooled batch that cannot be read (torn, truncated, empty), or that the warehouse rejects as breaking its
  contract, is moved to ``<spool>/_bad/`` with a log line and counted (``bad_batches``), never replayed again; a
  fresh batch the warehouse rejects goes there too.
- ``stop()`` (wired to SIGTERM/SIGINT by the CLI) ends the loop at once and flushes what is buffered.
- A crash (kill -9) loses at most the samples buffered since the last flush; re-storing anything twice is harmless
  because the warehouse's append is idempotent.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from collector.errors import CollectorError, SpoolUnusable
from collector.rows import Records, Rows, combine
from warehouse.errors import SchemaViolation
from warehouse.files import fsync_dir

log = logging.getLogger(__name__)
TABLES = ("samples", "allocations", "nodes")
_MALFORMED_KEYS = (b"gpuledger.malformed_lines", b"gpuledger.malformed_scrapes")
"""Where a spooled batch keeps ``Rows.malformed_lines`` and ``malformed_scrapes`` (its samples' schema metadata)."""
BAD = "_bad"


class Outcome(enum.Enum):
    """What became of the batch a flush took from the buffer."""

    STORED = "stored"
    SPOOLED = "spooled"
    REJECTED = "rejected"
    LOST = "lost"


@dataclass
class AgentStats:
    samples_taken: int = 0
    read_errors: int = 0
    flushes: int = 0
    rows_stored: int = 0
    spooled_batches: int = 0
    replayed_batches: int = 0
    dropped_batches: int = 0
    bad_batches: int = 0
    last_batch: Outcome | None = None
    """What became of the newest buffered batch (None: nothing was buffered)."""
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class BadBatch(Exception):
    """A spooled batch that cannot be read back."""


class Spool:
    """A bounded directory of batches that could not be stored yet."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    @property
    def bad_dir(self) -> Path:
        return self.directory / BAD

    def prepare(self) -> None:
        """Raise SpoolUnusable unless the spool is a writable directory, or one can be made where it is meant to
        be (nothing is created); remove the half-written batches a crash left."""
        path = self.directory
        if not path.exists():
            parent = next(p for p in path.absolute().parents if p.exists())
            if not parent.is_dir():
                raise SpoolUnusable(path, f"{parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise SpoolUnusable(path, f"it does not exist and {parent} is not writable")
            return
        if not path.is_dir():
            raise SpoolUnusable(path, "it is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise SpoolUnusable(path, "it is not writable")
        for partial in path.glob(".*.partial"):
            shutil.rmtree(partial, ignore_errors=True)

    def put(self, rows: Rows) -> int:
        """Keep ``rows`` for later; returns how many old batches were dropped to stay within the bound."""
        self._write(rows, self.directory)
        return self._trim()

    def put_aside(self, rows: Rows) -> Path:
        """Keep ``rows`` the warehouse rejected under ``_bad/``, for a person to look at; never replayed."""
        return self._write(rows, self.bad_dir)

    def set_aside(self, batch: Path) -> Path:
        """Move a spooled batch to ``_bad/``; returns where it went."""
        self.bad_dir.mkdir(exist_ok=True)
        target = self.bad_dir / batch.name
        batch.rename(target)
        fsync_dir(self.directory)
        return target

    def batches(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    @staticmethod
    def read(batch: Path) -> Rows:
        """The batch's rows; BadBatch when a file is missing, torn or not Arrow."""
        try:
            tables = {name: ipc.open_file(batch / f"{name}.arrow").read_all() for name in TABLES}
        except (OSError, pa.ArrowException) as exc:
            raise BadBatch(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        meta = tables["samples"].schema.metadata or {}
        malformed = [int(meta.get(key, b"0")) for key in _MALFORMED_KEYS]
        samples = tables["samples"].replace_schema_metadata(None)
        return Rows(samples, tables["allocations"], tables["nodes"], *malformed)

    @staticmethod
    def remove(batch: Path) -> None:
        shutil.rmtree(batch, ignore_errors=True)

    def size(self) -> int:
        return sum(f.stat().st_size for b in self.batches() for f in b.iterdir())

    def _write(self, rows: Rows, directory: Path) -> Path:
        """Write the batch whole under a hidden name, fsync every file and the folder, then rename it into place."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        staging = directory / f".{name}.partial"
        staging.mkdir()
        try:
            for table_name in TABLES:
                table: pa.Table = getattr(rows, table_name)
                if table_name == "samples" and rows.malformed_lines:
                    counts = (rows.malformed_lines, rows.malformed_scrapes)
                    table = table.replace_schema_metadata(
                        {key: str(n).encode() for key, n in zip(_MALFORMED_KEYS, counts, strict=True)}
                    )
                with (staging / f"{table_name}.arrow").open("wb") as handle:
                    with ipc.new_file(handle, table.schema) as writer:
                        writer.write_table(table)
                    handle.flush()
                    os.fsync(handle.fileno())
            fsync_dir(staging)
            staging.rename(directory / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(directory)
        return directory / name

    def _trim(self) -> int:
        dropped = 0
        batches = self.batches()
        while len(batches) > 1 and self.size() > self.max_bytes:
            self.remove(batches.pop(0))
            dropped += 1
        return dropped


class NodeAgent:
    def __init__(
        self,
        read: Callable[[], Rows | Records],
        store: Callable[[Rows], object],
        spool: Spool,
        *,
        interval_s: float = 10.0,
        flush_every_s: float = 60.0,
        on_sample: Callable[[Rows | Records], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.store = store
        self.spool = spool
        self.interval_s = interval_s
        self.flush_every_s = flush_every_s
        self.on_sample = on_sample
        self.monotonic = monotonic
        self.stats = AgentStats()
        self._buffer: list[Rows | Records] = []
        self._stop = threading.Event()
        self._once = False

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, duration_s: float | None = None, once: bool = False) -> AgentStats:
        """Sample until stopped (or for ``duration_s``, or once), then flush what is buffered."""
        self._once = once
        start = self.monotonic()
        last_flush = start
        tick = 0
        try:
            while not self._stop.is_set():
                self._sample_once(raise_errors=once)
                if once:
                    break
                now = self.monotonic()
                if now - last_flush >= self.flush_every_s:
                    self.flush()
                    last_flush = now
                tick += 1
                next_at = start + tick * self.interval_s
                if duration_s is not None and next_at - start > duration_s:
                    break
                self._stop.wait(max(0.0, next_at - self.monotonic()))
        finally:
            self.flush()
        return self.stats

    def _sample_once(self, *, raise_errors: bool) -> None:
        try:
            rows = self.read()
        except CollectorError as exc:
            if raise_errors:
                raise
            self.stats.read_errors += 1
            self.stats.last_error = str(exc)
            log.error("sampling failed: %s", exc)
            return
        self.stats.samples_taken += 1
        self._buffer.append(rows)
        if self.on_sample is not None:
            self.on_sample(rows)

    def flush(self) -> None:
        """Store the spool (oldest first), then the buffer; what cannot be stored goes to the spool."""
        batch = combine(self._buffer) if self._buffer else None
        self._buffer = []
        self.stats.flushes += 1
        self.stats.last_batch = self._flush(batch)

    def _flush(self, batch: Rows | None) -> Outcome | None:
        for spooled in self.spool.batches():
            try:
                rows = self.spool.read(spooled)
            except BadBatch as exc:
                self._set_aside(spooled, f"it cannot be read ({exc})")
                continue
            outcome = self._try_store(rows)
            if outcome is Outcome.REJECTED:
                self._set_aside(spooled, f"the warehouse rejects it ({self.stats.last_error})")
                continue
            if outcome is not Outcome.STORED:
                return None if batch is None else self._keep(batch)
            self.spool.remove(spooled)
            self.stats.replayed_batches += 1
        if batch is None:
            return None
        outcome = self._try_store(batch)
        if outcome is Outcome.REJECTED:
            try:
                where = self.spool.put_aside(batch)
            except OSError as exc:
                log.error(
                    "the warehouse rejects %d rows (%s); they cannot be kept either (%s)",
                    batch.count,
                    self.stats.last_error,
                    exc,
                )
                return Outcome.LOST
            self.stats.bad_batches += 1
            log.error(
                "the warehouse rejects %d rows (%s); they are kept in %s", batch.count, self.stats.last_error, where
            )
            return Outcome.REJECTED
        return outcome if outcome is Outcome.STORED else self._keep(batch)

    def _keep(self, batch: Rows) -> Outcome:
        try:
            dropped = self.spool.put(batch)
        except OSError as exc:
            self.stats.dropped_batches += 1
            log.error("cannot spool %d rows in %s (%s): they are lost", batch.count, self.spool.directory, exc)
            return Outcome.LOST
        self.stats.spooled_batches += 1
        if dropped:
            self.stats.dropped_batches += dropped
            log.error("spool %s is over its bound: dropped the %d oldest batches", self.spool.directory, dropped)
        return Outcome.SPOOLED

    def _set_aside(self, batch: Path, why: str) -> None:
        where = self.spool.set_aside(batch)
        self.stats.bad_batches += 1
        log.error("spooled batch %s is never replayed: %s; moved to %s", batch.name, why, where)

    def _try_store(self, rows: Rows) -> Outcome:
        """STORED; REJECTED when the rows break the warehouse's contract (storing them again cannot help); or
        SPOOLED-to-be when the warehouse cannot take them now (it is down for whatever reason: keep the data)."""
        try:
            self.store(rows)
        except SchemaViolation as exc:
            self.stats.last_error = str(exc)
            return Outcome.REJECTED
        except Exception as exc:
            self.stats.last_error = str(exc)
            level = logging.INFO if self._once else logging.ERROR  # --once fails with this reason: say it once
            log.log(level, "cannot store %d rows (%s); keeping them in %s", rows.count, exc, self.spool.directory)
            return Outcome.SPOOLED
        self.stats.rows_stored += rows.count
        return Outcome.STORED
