"""Importing a FOCUS cost export (collector.focus, warehouse.bills, `gpuledger import-bill`): provider-realistic
exports made by focus-data-toolkit (AWS, Azure, GCP; FOCUS 1.2 and 1.3; CSV and Parquet), one-line errors for files
that are not FOCUS, and re-imports that replace a period instead of counting it twice."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from focus_data_toolkit.generators import get_generator

from collector.errors import BillFileError
from collector.focus import read_focus
from warehouse.bills import store_bill
from warehouse.lake import Lake
from warehouse.schema import BILL_LINES


def generated(tmp_path: Path, provider: str, version: str = "1.2", rows: int = 200, seed: int = 7) -> Path:
    """A FOCUS cost and usage CSV as focus-data-toolkit generates it (deterministic for rows and seed)."""
    path = tmp_path / f"focus_{version.replace('.', '_')}_{provider}.csv"
    path.write_bytes(get_generator(provider, version).generate_csv_bytes(rows, seed))
    return path


def expected_lines(path: Path) -> list[dict[str, str]]:
    """The lines the import should keep, selected with the csv module: compute usage priced in hours."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kept = []
    for row in rows:
        unit = (row.get("ConsumedUnit") or row.get("PricingUnit") or "").lower()
        quantity = row.get("ConsumedQuantity") if row.get("ConsumedUnit") else row.get("PricingQuantity")
        row["_hours"] = quantity or "0"
        if (
            row["ChargeCategory"] == "Usage"
            and row.get("ServiceCategory") in ("Compute", "", None)
            and unit in ("hours", "hrs", "hour")
            and quantity
            and float(quantity) > 0
        ):
            kept.append(row)
    return kept


@pytest.mark.parametrize(("provider", "version"), [("aws", "1.2"), ("azure", "1.2"), ("gcp", "1.2"), ("aws", "1.3")])
def test_generated_exports_keep_every_compute_usage_line_with_its_effective_cost(
    tmp_path: Path, provider: str, version: str
) -> None:
    path = generated(tmp_path, provider, version)
    lines = pl.from_arrow(read_focus(path))
    assert isinstance(lines, pl.DataFrame)
    want = expected_lines(path)
    assert lines.height == len(want) > 50
    assert lines["effective_cost"].sum() == pytest.approx(sum(float(r["EffectiveCost"]) for r in want))
    assert lines["usage_hours"].sum() == pytest.approx(sum(float(r["_hours"]) for r in want))
    assert lines["list_cost"].sum() > lines["effective_cost"].sum()  # committed-use discounts are in the bill
    assert lines["provider"].is_not_null().all() and lines["instance_type"].is_not_null().any()
    assert lines["line_id"].n_unique() == lines.height


def test_a_parquet_export_reads_as_its_csv(tmp_path: Path) -> None:
    path = generated(tmp_path, "gcp")
    parquet = tmp_path / "export.parquet"
    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(timestamp_parsers=["%Y-%m-%dT%H:%M:%SZ"]))
    pq.write_table(table, parquet)
    from_csv = pl.from_arrow(read_focus(path)).drop("file", "line", "line_id")
    from_parquet = pl.from_arrow(read_focus(parquet)).drop("file", "line", "line_id")
    assert from_parquet.equals(from_csv)


def test_reimport_writes_nothing_and_a_reissued_period_replaces_the_old_one(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "wh", create=True)
    path = generated(tmp_path, "aws", rows=120)
    first = store_bill(lake, read_focus(path))
    assert first.added == first.lines > 0 and first.replaced == 0
    version = lake.version()
    again = store_bill(lake, read_focus(path))
    assert (again.added, again.replaced) == (0, 0) and lake.version() == version
    reissued = tmp_path / "reissued.csv"
    text = path.read_text().splitlines()
    reissued.write_text("\n".join(text[: len(text) // 2]) + "\n")  # the same period, fewer lines
    third = store_bill(lake, read_focus(reissued))
    stored = lake.scan(BILL_LINES).collect()
    assert stored.height == third.lines < first.lines
    assert third.replaced == first.lines - third.lines


def test_import_bill_command_says_what_it_imported(tmp_path: Path, cli: Callable[..., Result]) -> None:
    Lake(tmp_path / "wh", create=True)
    path = generated(tmp_path, "azure", rows=100)
    result = cli("import-bill", str(path), "--warehouse", str(tmp_path / "wh"))
    assert result.exit_code == 0, result.output
    lines = len(expected_lines(path))
    assert result.output.startswith(f"imported {lines} compute usage lines from {path}: 1 billing period (2026-05), ")
    assert result.output.endswith(f"resources; {lines} new, 0 replaced\n")


HEADER = "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,EffectiveCost"
FIX = (
    "export the cost and usage data as FOCUS 1.x (CSV or Parquet) from AWS Data Exports, Azure Cost Management or "
    "the GCP billing export"
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty; " + FIX),
        (
            b"lineItem/UsageStartDate,lineItem/ResourceId,lineItem/UnblendedCost\n2026-05-01,i-0abc,1.0\n",
            "this is a legacy AWS Cost and Usage Report, not FOCUS; create a FOCUS 1.x export in AWS Data Exports",
        ),
        (
            b"EndTimestamp,InstanceID,Region,AssetClass,InstanceIDField,InstanceType,MarketPriceHourly,Version\n",
            "not a FOCUS cost export: the column BillingPeriodStart is missing; " + FIX,
        ),
        (
            (HEADER.replace(",EffectiveCost", "") + ",ResourceId,ConsumedQuantity\n").encode(),
            "not a FOCUS cost export: the column EffectiveCost is missing; " + FIX,
        ),
        (
            (
                HEADER + ",ResourceId,ConsumedQuantity,ConsumedUnit\n"
                "2026-05-01T00:00:00Z,2026-06-01T00:00:00Z,2026-05-01T00:00:00Z,2026-05-01T01:00:00Z,Usage,"
                "twelve,i-0abc12345678,1,Hours\n"
            ).encode(),
            "line 2, column EffectiveCost: 'twelve' is not a number; fix or re-export the file",
        ),
        (
            (
                HEADER + ",ResourceId,ConsumedQuantity,ConsumedUnit\n"
                "2026-05-01T00:00:00Z,2026-06-01T00:00:00Z,May 1st,2026-05-01T01:00:00Z,Usage,"
                "1.5,i-0abc12345678,1,Hours\n"
            ).encode(),
            "line 2, column ChargePeriodStart: 'May 1st' is not an ISO 8601 UTC time; re-export the file (FOCUS "
            "writes times like 2026-05-01T00:00:00Z)",
        ),
    ],
    ids=["empty", "legacy-cur", "opencost-csv", "no-effective-cost", "bad-number", "bad-time"],
)
def test_a_file_that_is_not_a_focus_export_is_one_line_naming_it_and_the_fix(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bill.csv"
    path.write_bytes(content)
    with pytest.raises(BillFileError) as caught:
        read_focus(path)
    assert str(caught.value) == f"bill {path}: {message}"


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path, cli: Callable[..., Result]) -> None:
    Lake(tmp_path / "wh", create=True)
    storage_only = tmp_path / "storage.csv"
    buffer = io.StringIO()
    buffer.write(HEADER + ",ResourceId,ServiceCategory,ConsumedQuantity,ConsumedUnit\n")
    buffer.write("2026-05-01T00:00:00Z,2026-06-01T00:00:00Z,2026-05-01T00:00:00Z,2026-06-01T00:00:00Z,Usage,")
    buffer.write("2.30,vol-1,Storage,100,GB-Months\n")
    storage_only.write_text(buffer.getvalue())
    result = cli("import-bill", str(storage_only), "--warehouse", str(tmp_path / "wh"))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: bill {storage_only}: no compute usage lines priced in hours (ChargeCategory Usage, ServiceCategory "
        f"Compute); {FIX}\n"
    )
    missing = tmp_path / "nope.csv"
    result = cli("import-bill", str(missing), "--warehouse", str(tmp_path / "wh"))
    assert result.exit_code == 2
    assert result.output == f"Error: bill {missing}: cannot read it (No such file or directory); check the path\n"
