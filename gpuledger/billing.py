"""The bill import job: read FOCUS cost exports at the edge (``collector.focus``), store their lines
(``warehouse.bills``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from collector.errors import BillFileError
from collector.focus import FIX, read_focus
from warehouse.bills import BillImport, store_bill
from warehouse.lake import Lake


def import_bill(lake: Lake, files: Sequence[Path]) -> BillImport:
    """Import the compute usage lines of ``files`` (the parts of one export) as one import: every file is read and
    checked before anything is stored, and a file without a compute usage line in hours is an error."""
    tables = []
    for path in files:
        lines = read_focus(path)
        if lines.num_rows == 0:
            raise BillFileError(
                path, "no compute usage lines priced in hours (ChargeCategory Usage, ServiceCategory Compute)", FIX
            )
        tables.append(lines)
    return store_bill(lake, pa.concat_tables(tables))
