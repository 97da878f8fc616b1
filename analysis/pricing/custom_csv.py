"""The OpenCost custom pricing CSV (``pricing_schema.csv``): its node and GPU rows, read and checked."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from analysis.pricing.errors import CustomPricingCsvError

CSV_COLUMNS = (
    "EndTimestamp",
    "InstanceID",
    "Region",
    "AssetClass",
    "InstanceIDField",
    "InstanceType",
    "MarketPriceHourly",
    "Version",
)
"""The OpenCost custom-pricing CSV header (``configs/pricing_schema.csv``)."""


@dataclass(frozen=True)
class CustomPrice:
    """One node or GPU row of an OpenCost custom-pricing CSV (``pv`` rows are read and dropped).

    ``instance_id_field`` is ``metadata.name`` or ``metadata.labels.<key>`` for a node row and a label key
    (``nvidia.com/gpu_type``, ``gpu.nvidia.com/class``, ``nvidia.com/gpu.product``) for a GPU row. ``region`` and
    ``instance_type`` are empty when the row leaves them blank (an empty region matches every region).
    ``usd_per_hour`` is per node-hour for a node row and per GPU-hour for a GPU row.
    """

    asset_class: Literal["node", "gpu"]
    instance_id: str
    instance_id_field: str
    instance_type: str
    region: str
    usd_per_hour: float
    origin: str
    """Where the row came from, e.g. ``prices.csv line 3``."""


def load_custom_pricing_csv(path: Path | str) -> tuple[CustomPrice, ...]:
    """The node and GPU rows of an OpenCost custom-pricing CSV (``EndTimestamp,InstanceID,Region,AssetClass,
    InstanceIDField,InstanceType,MarketPriceHourly,Version``).

    Blank lines and lines starting with ``#`` are skipped; ``pv`` rows are checked and dropped. A bad file raises
    ``CustomPricingCsvError`` naming the file, the line and the column: a missing header column, a wrong number of
    fields, an unknown ``AssetClass``, an unsupported ``InstanceIDField`` (``spec.providerID`` and annotations: the
    ``nodes`` table holds neither), a node row with neither ``InstanceID`` nor ``InstanceType``, or a
    ``MarketPriceHourly`` that is not a positive number.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CustomPricingCsvError(source, None, None, f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise CustomPricingCsvError(source, None, None, "not UTF-8 text") from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise CustomPricingCsvError(
            source, 1, None, f"empty file; expected the header {','.join(CSV_COLUMNS)}"
        ) from None
    names = [h.strip() for h in header]
    for column in CSV_COLUMNS:
        if column not in names:
            raise CustomPricingCsvError(
                source, 1, column, f"missing from the header (expected {','.join(CSV_COLUMNS)})"
            )
    index = {name: names.index(name) for name in CSV_COLUMNS}
    rows: list[CustomPrice] = []
    for record in reader:
        line = reader.line_num
        if not record or not any(cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
            continue
        if len(record) != len(names):
            raise CustomPricingCsvError(source, line, None, f"expected {len(names)} fields, found {len(record)}")
        row = {name: record[i].strip() for name, i in index.items()}
        parsed = _custom_row(source, line, row)
        if parsed is not None:
            rows.append(parsed)
    return tuple(rows)


def _custom_row(source: Path, line: int, row: dict[str, str]) -> CustomPrice | None:
    asset_class = row["AssetClass"].lower()
    if asset_class not in ("node", "gpu", "pv"):
        raise CustomPricingCsvError(source, line, "AssetClass", f"{row['AssetClass']!r} is not one of node, gpu, pv")
    raw_price = row["MarketPriceHourly"]
    try:
        price = float(raw_price)
    except ValueError:
        raise CustomPricingCsvError(source, line, "MarketPriceHourly", f"{raw_price!r} is not a number") from None
    if not math.isfinite(price) or price <= 0:
        raise CustomPricingCsvError(
            source, line, "MarketPriceHourly", f"{raw_price!r} is not a positive number of USD per hour"
        )
    if asset_class == "pv":
        return None
    field_name = row["InstanceIDField"]
    if asset_class == "node":
        if field_name == "spec.providerID" or field_name.startswith("metadata.annotations."):
            raise CustomPricingCsvError(
                source,
                line,
                "InstanceIDField",
                f"{field_name!r} is not supported (the nodes table has no provider ID or annotations); "
                "use metadata.name or metadata.labels.<key>",
            )
        if field_name and field_name != "metadata.name" and not field_name.startswith("metadata.labels."):
            raise CustomPricingCsvError(
                source,
                line,
                "InstanceIDField",
                f"{field_name!r} is not supported for a node; use metadata.name or metadata.labels.<key>",
            )
        if not row["InstanceID"] and not row["InstanceType"]:
            raise CustomPricingCsvError(
                source, line, "InstanceID", "empty: a node row needs an InstanceID or an InstanceType"
            )
        if row["InstanceID"] and not field_name:
            raise CustomPricingCsvError(
                source, line, "InstanceIDField", "empty: say which node field holds the InstanceID"
            )
    else:
        field_name = field_name.removeprefix("metadata.labels.")
        if not field_name:
            raise CustomPricingCsvError(
                source, line, "InstanceIDField", "empty: a GPU row names the node label holding the GPU type"
            )
        if not row["InstanceID"]:
            raise CustomPricingCsvError(source, line, "InstanceID", "empty: a GPU row needs the GPU type")
    return CustomPrice(
        asset_class="node" if asset_class == "node" else "gpu",
        instance_id=row["InstanceID"],
        instance_id_field=field_name,
        instance_type=row["InstanceType"],
        region=row["Region"],
        usd_per_hour=price,
        origin=f"{source.name} line {line}",
    )
