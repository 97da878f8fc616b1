"""The node agent loop: sample on a fixed interval, buffer, flush to the warehouse, spool when it cannot.

- Samples are taken at ``start + k * interval`` (no drift), buffered, and flushed every ``flush_every_s``.
- A flush that fails (warehouse unwritable, disk full) writes the batch to a bounded spool directory as Arrow IPC
  files (written whole, then renamed). Every later successful flush first replays the spool, oldest first, and
  deletes each spooled batch only after it is stored. When the spool would exceed its bound, the oldest batches are
  dropped and the loss is logged.
- ``stop()`` (wired to SIGTERM/SIGINT by the CLI) ends the loop at once and flushes what is buffered.
- A crash (kill -9) loses at most the samples buffered since the last flush; re-storing anything twice is harmless
  because the warehouse's append is idempotent.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from collector.errors import CollectorError
from collector.rows import Records, Rows, combine

log = logging.getLogger(__name__)
TABLES = ("samples", "allocations", "nodes")


@dataclass
class AgentStats:
    samples_taken: int = 0
    read_errors: int = 0
    flushes: int = 0
    rows_stored: int = 0
    spooled_batches: int = 0
    replayed_batches: int = 0
    dropped_batches: int = 0
    last_error: str | None = None
    errors: list[str] = field(default_factory=list)


class Spool:
    """A bounded directory of batches that could not be stored yet."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def put(self, rows: Rows) -> int:
        """Keep ``rows`` for later; returns how many old batches were dropped to stay within the bound."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        staging = self.directory / f".{name}.partial"
        staging.mkdir()
        for table_name in TABLES:
            table: pa.Table = getattr(rows, table_name)
            with ipc.new_file(staging / f"{table_name}.arrow", table.schema) as writer:
                writer.write_table(table)
        staging.rename(self.directory / name)
        return self._trim()

    def batches(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))

    @staticmethod
    def read(batch: Path) -> Rows:
        tables = {name: ipc.open_file(batch / f"{name}.arrow").read_all() for name in TABLES}
        return Rows(tables["samples"], tables["allocations"], tables["nodes"])

    @staticmethod
    def remove(batch: Path) -> None:
        shutil.rmtree(batch, ignore_errors=True)

    def size(self) -> int:
        return sum(f.stat().st_size for b in self.batches() for f in b.iterdir())

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

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, duration_s: float | None = None, once: bool = False) -> AgentStats:
        """Sample until stopped (or for ``duration_s``, or once), then flush what is buffered."""
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
        for spooled in self.spool.batches():
            if not self._try_store(self.spool.read(spooled)):
                break
            self.spool.remove(spooled)
            self.stats.replayed_batches += 1
        else:
            if batch is None or self._try_store(batch):
                return
        if batch is not None:
            dropped = self.spool.put(batch)
            self.stats.spooled_batches += 1
            if dropped:
                self.stats.dropped_batches += dropped
                log.error("spool %s is over its bound: dropped the %d oldest batches", self.spool.directory, dropped)

    def _try_store(self, rows: Rows) -> bool:
        try:
            self.store(rows)
        except Exception as exc:  # the warehouse is down for whatever reason: keep the data, say why
            self.stats.last_error = str(exc)
            log.error("cannot store %d rows (%s); keeping them in %s", rows.count, exc, self.spool.directory)
            return False
        self.stats.rows_stored += rows.count
        return True
