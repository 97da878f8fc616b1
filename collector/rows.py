"""What every source hands to the warehouse: samples, allocations and node facts as Arrow tables.

Sources build plain records (dicts keyed by the warehouse column names) or Arrow tables; ``Rows`` carries them with
the warehouse schemas, so nothing downstream needs to know which source produced them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES, NODES


@dataclass(frozen=True)
class Rows:
    samples: pa.Table
    allocations: pa.Table
    nodes: pa.Table

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
            pa.Table.from_pylist(list(samples), schema=GPU_SAMPLES.schema),
            pa.Table.from_pylist(list(allocations), schema=GPU_ALLOCATIONS.schema),
            pa.Table.from_pylist(list(nodes), schema=NODES.schema),
        )

    def __add__(self, other: Rows) -> Rows:
        return Rows(
            pa.concat_tables([self.samples, other.samples]),
            pa.concat_tables([self.allocations, other.allocations]),
            pa.concat_tables([self.nodes, other.nodes]),
        )

    @property
    def count(self) -> int:
        return self.samples.num_rows + self.allocations.num_rows + self.nodes.num_rows
