"""Storing an imported bill: the ``bill_lines`` of one import replace what the warehouse held for the same billing
periods of the same accounts, in one transaction.

An export is re-issued whole for a period while the period is open (AWS Data Exports overwrites it; Azure and GCP
rewrite the month), so appending would count a re-issued line twice. A period is therefore owned by the import
that last covered it: (provider, billing account, billing period start) groups present in the new lines replace
the stored lines of the same groups; other accounts' lines in the same period stay. Importing the same lines again
writes nothing. The files of an export split into parts are imported together, as one import.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from warehouse.ingest import conform
from warehouse.lake import Lake, Partition
from warehouse.reading import scan
from warehouse.schema import BILL_LINES

GROUP = ("provider", "billing_account_id", "billing_period_start")
"""The lines one import owns: one account's billing period at one provider."""


@dataclass(frozen=True)
class BillImport:
    """What an import changed: lines given, lines that were new, lines replaced, and what they cover."""

    lines: int
    added: int
    replaced: int
    periods: tuple[tuple[dt.datetime, dt.datetime], ...]
    resources: int


def store_bill(lake: Lake, lines: pa.Table) -> BillImport:
    """Replace the stored ``bill_lines`` of the periods ``lines`` covers with ``lines`` (see the module docstring).

    Atomic: every touched billing-period partition is rewritten in one commit, or nothing is."""
    conformed = conform(BILL_LINES, lines)
    new = pl.from_arrow(conformed)
    assert isinstance(new, pl.DataFrame)
    new = new.unique("line_id", keep="first", maintain_order=True)
    groups = new.select(GROUP).unique()
    added = replaced = 0
    with lake.writing():
        adds, removes = [], []
        dated = new.with_columns(pl.col("billing_period_start").dt.date().alias("_d"))
        for (day,), rows in dated.partition_by("_d", as_dict=True, include_key=False, maintain_order=True).items():
            assert isinstance(day, dt.date)
            partition = Partition(day, None)
            existing = lake.parts(BILL_LINES, start=day, end=day)
            stored = scan(BILL_LINES, existing).collect() if existing else new.clear()
            kept = stored.join(groups, on=list(GROUP), how="anti", nulls_equal=True)
            dropped = stored.join(groups, on=list(GROUP), how="semi", nulls_equal=True)
            fresh = rows.join(dropped.select("line_id"), on="line_id", how="anti")
            gone = dropped.join(rows.select("line_id"), on="line_id", how="anti")
            if fresh.height == 0 and gone.height == 0:
                continue
            added += fresh.height
            replaced += gone.height
            merged = pl.concat([kept, rows.select(kept.columns)]).sort("billing_period_start", "file", "line")
            adds.append(lake.stage(BILL_LINES, partition, merged.to_arrow().cast(BILL_LINES.schema)))
            removes.extend(existing)
        lake.commit(adds, removes)
    periods = tuple(
        (r["billing_period_start"], r["billing_period_end"])
        for r in new.select("billing_period_start", "billing_period_end")
        .unique()
        .sort("billing_period_start")
        .iter_rows(named=True)
    )
    return BillImport(
        lines=new.height,
        added=added,
        replaced=replaced,
        periods=periods,
        resources=new["resource_id"].drop_nulls().n_unique(),
    )
