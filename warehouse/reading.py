"""Reading parts: one Arrow dataset over a table's part files, with every page's CRC checked as it is decoded.

Parts are written with a CRC per page (``lake._write_options``). DuckDB's own Parquet reader (1.x, 2.0) does not
verify page CRCs, and neither does Polars', so a flipped bit inside a compressed page can decode into wrong numbers
without an error. Reading through this dataset makes such a page fail loudly (an ``OSError`` naming the CRC
mismatch) in every engine that scans it: DuckDB scans an Arrow dataset with projection and filter pushdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.dataset as ds

from warehouse.schema import Table

SCAN_OPTIONS = ds.ParquetFragmentScanOptions(page_checksum_verification=True)
PARQUET = ds.ParquetFileFormat(default_fragment_scan_options=SCAN_OPTIONS)


def dataset(table: Table, files: Sequence[Path | str]) -> ds.Dataset:
    """The parts ``files`` of ``table`` as one dataset with the table's schema: a column a part lacks (written
    before the column existed) reads as nulls, and a damaged page raises instead of decoding silently."""
    return ds.dataset([str(f) for f in files], schema=table.schema, format=PARQUET)
