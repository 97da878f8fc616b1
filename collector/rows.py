"""What every source hands to the warehouse: samples, allocations and node facts as Arrow tables.

Sources build plain records (dicts keyed by the warehouse column names) or Arrow tables; ``Rows`` carries them with
the warehouse schemas, so nothing downstream needs to know which source produced them.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES, Table


@dataclass(frozen=True)
class Rows:
    samples: pa.Table
    allocations: pa.Table
    nodes: pa.Table
    malformed_lines: int = 0
    """Lines of the source's answers that did not parse and were skipped (dcgm-exporter pages, ``collector.dcgm``)."""
    malformed_scrapes: int = 0
    """Answers among these rows' that had such lines."""

    @classmethod
    def empty(cls) -> Rows:
        return cls(GPU_SAMPLES.schema.empty_table(), GPU_ALLOCATIONS.schema.empty_table(), NODES.schema.empty_table())

    @classmethod
    def from_records(
        cls,
        samples: Iterable[Mapping[str, Any]] = (),
        allocations: Iterable[Mapping[str, Any]] = (),
        nodes: Iterable[Mapping[str, Any]] = (),
    ) -> Rows:
        """Rows from records keyed by column name; absent columns are null."""
        return cls(
            _table(list(samples), GPU_SAMPLES.schema),
            _table(list(allocations), GPU_ALLOCATIONS.schema),
            _table(list(nodes), NODES.schema),
        )

    def __add__(self, other: Rows) -> Rows:
        return Rows(
            pa.concat_tables([self.samples, other.samples]),
            pa.concat_tables([self.allocations, other.allocations]),
            pa.concat_tables([self.nodes, other.nodes]),
            self.malformed_lines + other.malformed_lines,
            self.malformed_scrapes + other.malformed_scrapes,
        )

    @property
    def count(self) -> int:
        return self.samples.num_rows + self.allocations.num_rows + self.nodes.num_rows

    def batches(self) -> list[tuple[Table, pa.Table]]:
        """(warehouse table, rows) pairs, for ``warehouse.ingest.append_many``."""
        return [(GPU_SAMPLES, self.samples), (GPU_ALLOCATIONS, self.allocations), (NODES, self.nodes)]

    def to_rows(self) -> Rows:
        return self

    def sample_dicts(self) -> list[dict[str, Any]]:
        return self.samples.to_pylist()

    def allocation_dicts(self) -> list[dict[str, Any]]:
        return self.allocations.to_pylist()

    def node_dicts(self) -> list[dict[str, Any]]:
        return self.nodes.to_pylist()


@dataclass(frozen=True)
class Records:
    """Rows not yet converted to Arrow, as tuples in each table's column order: what a fast sampler returns per
    tick. Building Arrow tables costs ~37 us per row for a handful of rows but well under 1 us per row for
    thousands, so the agent buffers records and converts them once per flush."""

    samples: list[tuple[Any, ...]] = field(default_factory=list)
    allocations: list[tuple[Any, ...]] = field(default_factory=list)
    nodes: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.samples) + len(self.allocations) + len(self.nodes)

    def to_rows(self) -> Rows:
        return Rows(
            _table_from_tuples(self.samples, GPU_SAMPLES.schema),
            _table_from_tuples(self.allocations, GPU_ALLOCATIONS.schema),
            _table_from_tuples(self.nodes, NODES.schema),
        )

    def sample_dicts(self) -> list[dict[str, Any]]:
        names = GPU_SAMPLES.schema.names
        return [dict(zip(names, row, strict=True)) for row in self.samples]

    def allocation_dicts(self) -> list[dict[str, Any]]:
        names = GPU_ALLOCATIONS.schema.names
        return [dict.fromkeys(names) | dict(zip(names, row, strict=False)) for row in self.allocations]

    def node_dicts(self) -> list[dict[str, Any]]:
        names = NODES.schema.names
        return [dict.fromkeys(names) | dict(zip(names, row, strict=False)) for row in self.nodes]


def combine(batches: Sequence[Rows | Records]) -> Rows:
    """One Rows from many readings: records are converted together, in one pass.

    The cyclic garbage collector is paused for the conversion: it holds no cycles, but the many short-lived
    lists it allocates would otherwise trigger full collections over every buffered record (10x the cost).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        records = Records(
            [s for b in batches if isinstance(b, Records) for s in b.samples],
            [a for b in batches if isinstance(b, Records) for a in b.allocations],
            [n for b in batches if isinstance(b, Records) for n in b.nodes],
        )
        out = records.to_rows()
    finally:
        if paused:
            gc.enable()
    for rows in (b for b in batches if isinstance(b, Rows)):
        out = out + rows
    return out


def _table(records: list[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Records keyed by column name to a table."""
    return _table_from_columns([[r.get(name) for r in records] for name in schema.names], schema)


def _table_from_tuples(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Tuples in column order; tuples shorter than the schema leave its last columns null (a column added to a table
    after a source was written reads as absent from that source)."""
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in schema.names]
    columns += [[None] * len(rows) for _ in range(len(schema.names) - len(columns))]
    return _table_from_columns(columns, schema)


def _table_from_columns(columns: list[list[Any]], schema: pa.Schema) -> pa.Table:
    """Column lists to a table (several times faster than ``pa.Table.from_pylist``). Timestamps go through epoch
    microseconds: pyarrow converts timezone-aware datetimes ~100x slower than ints."""
    arrays = []
    for fld, values in zip(schema, columns, strict=True):
        if pa.types.is_timestamp(fld.type):
            arrays.append(pa.array([_epoch_us(v) for v in values], type=fld.type))
        else:
            arrays.append(pa.array(values, type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch_us(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _MICROSECOND
