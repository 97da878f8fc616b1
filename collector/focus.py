"""A cloud's own FOCUS cost export (FOCUS 1.x, CSV or Parquet) read into ``bill_lines`` rows.

FOCUS is the FinOps Foundation's cost and usage format that AWS Data Exports, Azure Cost Management and the GCP
billing export write. Columns relied on (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec ``specification/columns/``):

- ``BillingPeriodStart`` / ``BillingPeriodEnd`` and ``ChargePeriodStart`` / ``ChargePeriodEnd`` (inclusive start,
  exclusive end);
- ``ChargeCategory``: only ``Usage`` lines price an instance (a ``Purchase`` that covers future usage has an
  ``EffectiveCost`` of 0; its amortized share is in the usage lines it covered);
- ``EffectiveCost``: the amortized cost after every reduced rate, discount and prepaid commitment that covered the
  line (Savings Plans, reserved instances, committed use, negotiated rates); ``BilledCost`` and ``ListCost`` are kept
  beside it;
- ``ConsumedQuantity`` in ``ConsumedUnit`` hours, else ``PricingQuantity`` in ``PricingUnit`` hours: the line's
  instance-hours. Lines in other units (GB-months, requests) are not instance time and are skipped;
- ``ResourceId`` (the instance: ``i-0abc...`` on AWS, a ``//compute.googleapis.com/...`` path on GCP, an ARM id on
  Azure), ``RegionId`` (``Region`` in FOCUS 1.0 previews), ``ProviderName`` (``ServiceProviderName`` from 1.3),
  ``BillingAccountId``, ``BillingCurrency``, ``ServiceCategory`` (only ``Compute`` when present);
- the instance type: ``SkuPriceDetails``' ``InstanceType`` (``F_InstanceType`` in later drafts), else an
  ``x_InstanceType`` column, else AWS's ``x_UsageType`` (``USE1-BoxUsage:p5.48xlarge``);
- spot: ``PricingCategory`` ``Dynamic``, an AWS ``SpotUsage`` usage type or GCP's ``x_Preemptible``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from collector.errors import BillFileError
from warehouse.schema import BILL_LINES

REQUIRED = (
    "BillingPeriodStart",
    "BillingPeriodEnd",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ChargeCategory",
    "EffectiveCost",
)
"""Columns every FOCUS 1.x cost and usage dataset has (FOCUS: Mandatory) and the import cannot do without."""
HOUR_UNITS = frozenset({"hour", "hours", "hrs", "hr", "h"})
FIX = (
    "export the cost and usage data as FOCUS 1.x (CSV or Parquet) from AWS Data Exports, Azure Cost Management or "
    "the GCP billing export"
)
_USAGE_TYPE = re.compile(r"(?:^|[-:])(Box|Spot|Dedicated|Reserved)?Usage:(?P<type>[a-z0-9]+\.[a-z0-9-]+)$", re.I)
_TEXT = pl.String


def read_focus(path: Path | str) -> pa.Table:
    """The compute usage lines of a FOCUS cost export as ``bill_lines`` rows (``warehouse.schema.BILL_LINES``).

    The format is told by the content: Parquet by its ``PAR1`` magic, else UTF-8 CSV with a header. A file that
    cannot be read, is empty, is another format (the legacy AWS CUR, an OpenCost CSV), lacks a column the import
    needs or holds a value its column cannot hold raises ``BillFileError`` naming the file, the column (and the
    line) and the fix. A valid export without compute usage lines gives an empty table."""
    source = Path(path)
    frame, first_line = _load(source)
    _check_columns(source, frame.columns)
    return _lines(source, frame, first_line)


def _load(source: Path) -> tuple[pl.DataFrame, int]:
    try:
        with source.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise BillFileError(source, f"cannot read it ({exc.strerror or exc})", "check the path") from None
    if not head:
        raise BillFileError(source, "the file is empty", FIX)
    if head == b"PAR1":
        try:
            table = pq.read_table(source)
        except (pa.ArrowException, OSError) as exc:
            raise BillFileError(source, f"not a readable Parquet file ({exc})", FIX) from None
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        return frame, 1
    try:
        frame = pl.read_csv(source, infer_schema=False, encoding="utf8", raise_if_empty=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, UnicodeDecodeError) as exc:
        raise BillFileError(source, f"neither Parquet nor a readable CSV ({str(exc).splitlines()[0]})", FIX) from None
    if not frame.columns:
        raise BillFileError(source, "the file is empty", FIX)
    return frame.rename({c: c.lstrip("\ufeff").strip() for c in frame.columns}), 2


def _check_columns(source: Path, columns: list[str]) -> None:
    if any(c.startswith("lineItem/") or c.startswith("line_item_") for c in columns):
        raise BillFileError(
            source,
            "this is a legacy AWS Cost and Usage Report, not FOCUS",
            "create a FOCUS 1.x export in AWS Data Exports",
        )
    for column in REQUIRED:
        if column not in columns:
            raise BillFileError(source, f"not a FOCUS cost export: the column {column} is missing", FIX)
    if "ResourceId" not in columns and not _has_instance_type(columns):
        raise BillFileError(
            source,
            "neither ResourceId nor an instance type (SkuPriceDetails, x_InstanceType, x_UsageType) to match nodes by",
            "export FOCUS with ResourceId (AWS: include resource IDs in the export)",
        )
    if not any(c in columns for c in ("ConsumedQuantity", "PricingQuantity")):
        raise BillFileError(source, "neither ConsumedQuantity nor PricingQuantity: no usage hours", FIX)


def _has_instance_type(columns: list[str]) -> bool:
    return any(c in columns for c in ("SkuPriceDetails", "x_InstanceType", "x_UsageType"))


def _col(frame: pl.DataFrame, *names: str) -> pl.Expr:
    for name in names:
        if name in frame.columns:
            return pl.col(name).cast(_TEXT).str.strip_chars()
    return pl.lit(None, dtype=_TEXT)


def _lines(source: Path, frame: pl.DataFrame, first_line: int) -> pa.Table:
    frame = frame.with_row_index("_row").with_columns((pl.col("_row") + first_line).cast(pl.Int64).alias("_line"))
    usage = frame.filter(_col(frame, "ChargeCategory").str.to_lowercase() == "usage")
    if "ServiceCategory" in usage.columns:
        category = _col(usage, "ServiceCategory")
        usage = usage.filter(category.is_null() | (category.str.to_lowercase() == "compute"))
    consumed = _number(source, usage, "ConsumedQuantity")
    priced = _number(source, usage, "PricingQuantity")
    consumed_unit = _col(usage, "ConsumedUnit").str.to_lowercase()
    pricing_unit = _col(usage, "PricingUnit").str.to_lowercase()
    usage = usage.with_columns(
        pl.when(consumed_unit.is_in(HOUR_UNITS) & consumed.is_not_null())
        .then(consumed)
        .when(pricing_unit.is_in(HOUR_UNITS) & priced.is_not_null())
        .then(priced)
        .otherwise(None)
        .alias("_hours")
    ).filter(pl.col("_hours") > 0)
    out = usage.select(
        *(_time(source, usage, c).alias(_snake(c)) for c in REQUIRED[:4]),
        _col(usage, "ProviderName", "ServiceProviderName").alias("provider"),
        _col(usage, "BillingAccountId").alias("billing_account_id"),
        _col(usage, "ResourceId").alias("resource_id"),
        _instance_type(usage).alias("instance_type"),
        _col(usage, "RegionId", "Region").alias("region"),
        _spot(usage).alias("capacity_type"),
        _col(usage, "PricingCategory").alias("pricing_category"),
        pl.col("_hours").alias("usage_hours"),
        _number(source, usage, "EffectiveCost", required=True).alias("effective_cost"),
        _number(source, usage, "BilledCost").alias("billed_cost"),
        _number(source, usage, "ListCost").alias("list_cost"),
        _col(usage, "BillingCurrency").alias("currency"),
        pl.lit(source.name).alias("file"),
        pl.col("_line").alias("line"),
    )
    ids = [_line_id(row) for row in out.iter_rows()]
    out = out.with_columns(pl.Series("line_id", ids, dtype=_TEXT))
    return out.to_arrow().cast(BILL_LINES.schema)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _number(source: Path, frame: pl.DataFrame, column: str, *, required: bool = False) -> pl.Expr:
    if column not in frame.columns:
        return pl.lit(None, dtype=pl.Float64)
    raw = pl.col(column)
    if frame.schema[column] == pl.String:
        raw = raw.str.strip_chars()
        value = raw.cast(pl.Float64, strict=False)
        bad = frame.filter(raw.is_not_null() & (raw != "") & value.is_null())
    else:
        value = raw.cast(pl.Float64, strict=False)
        bad = frame.head(0)
    if bad.height:
        cell = bad[column][0]
        raise BillFileError(
            source, f"line {bad['_line'][0]}, column {column}: {cell!r} is not a number", "fix or re-export the file"
        )
    if required:
        missing = frame.filter(value.is_null())
        if missing.height:
            raise BillFileError(
                source,
                f"line {missing['_line'][0]}, column {column}: empty (FOCUS requires it on every line)",
                "re-export the file",
            )
    return value


def _time(source: Path, frame: pl.DataFrame, column: str) -> pl.Expr:
    dtype = frame.schema[column]
    if isinstance(dtype, pl.Datetime):
        expr = pl.col(column)
        parsed = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
        return parsed.dt.cast_time_unit("us")
    if dtype == pl.Date:
        return pl.col(column).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    raw = pl.col(column).cast(_TEXT).str.strip_chars()
    # FOCUS DateTimeFormat is ISO 8601 in UTC ("2026-05-01T00:00:00Z"); some exports add fractions or omit the Z
    parsed = (
        raw.str.replace(r"Z$", "")
        .str.replace(r"\+00:?00$", "")
        .str.replace(" ", "T")
        .str.to_datetime(time_unit="us", strict=False)
        .dt.replace_time_zone("UTC")
    )
    bad = frame.filter(parsed.is_null())
    if bad.height:
        cell = bad[column][0]
        raise BillFileError(
            source,
            f"line {bad['_line'][0]}, column {column}: {cell!r} is not an ISO 8601 UTC time",
            "re-export the file (FOCUS writes times like 2026-05-01T00:00:00Z)",
        )
    return parsed


def _instance_type(frame: pl.DataFrame) -> pl.Expr:
    from_details = pl.lit(None, dtype=_TEXT)
    if "SkuPriceDetails" in frame.columns:
        details = [_details_type(v) for v in frame["SkuPriceDetails"].cast(_TEXT).to_list()]
        from_details = pl.lit(pl.Series(details, dtype=_TEXT))
    usage_type = _col(frame, "x_UsageType").str.extract(_USAGE_TYPE.pattern, 2)
    return pl.coalesce(from_details, _col(frame, "x_InstanceType"), usage_type)


def _details_type(text: str | None) -> str | None:
    details = _details(text)
    value = details.get("InstanceType") or details.get("F_InstanceType")
    return str(value).strip() or None if value is not None else None


def _details(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _spot(frame: pl.DataFrame) -> pl.Expr:
    dynamic = _col(frame, "PricingCategory").str.to_lowercase() == "dynamic"
    spot_usage = _col(frame, "x_UsageType").str.contains("SpotUsage")
    preemptible = pl.lit(False)
    if "SkuPriceDetails" in frame.columns:
        flags = [
            str(_details(v).get("x_Preemptible", "")).lower() == "true"
            for v in frame["SkuPriceDetails"].cast(_TEXT).to_list()
        ]
        preemptible = pl.lit(pl.Series(flags, dtype=pl.Boolean))
    is_spot = dynamic.fill_null(False) | spot_usage.fill_null(False) | preemptible
    return pl.when(is_spot).then(pl.lit("spot")).otherwise(pl.lit("on-demand"))


def _line_id(row: tuple[Any, ...]) -> str:
    """The line's identity: its position in the file and every value kept (not the file name, so a renamed copy of
    an export is the same lines)."""
    values = [v.isoformat() if hasattr(v, "isoformat") else v for v in row[:-2]] + [row[-1]]
    return hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:32]
