"""Node prices from the bill: the effective cost per instance-hour of the ``bill_lines`` a FOCUS import stored.

Definitions (README, Definitions, "Bill import"; pinned by ``tests/test_pricing_bill.py``):

- A **bill rate** is sum(``effective_cost``) / sum(``usage_hours``) over the compute usage lines of one billing
  period, in USD per node-hour: per **resource** (the instance, by its id) and per **instance type, region and
  capacity type** (all instances of that type billed in that region, spot lines apart from the others). Lines billed
  in another currency than USD are left out (gpuledger's dollars are USD).
- A node is matched to its own resource first: the node's ``provider_id`` (``aws:///us-east-1a/i-0abc``,
  ``gce://project/zone/name``, ``azure:///subscriptions/...``) and the line's ``ResourceId`` are compared by the
  instance they name (:func:`resource_key`). Else to its instance type, region and capacity type. Either way only in
  the billing period that holds the node's date.
- The matched rate is the node price, divided by the node's GPU count as every node price is
  (``analysis.pricing.catalog``), and its ``price_source`` is ``bill (FOCUS, <file>, <period>): ...``. A node the
  bill does not cover keeps the list-price chain.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

BILL_MATCH_COLUMNS = ("bill_usd_per_node_hour", "bill_source")
"""The columns :func:`match_bill` adds to nodes: the matched bill rate (null when none) and its source."""

_AWS_INSTANCE = re.compile(r"\bi-[0-9a-f]{8,17}\b")
_GCE_PROVIDER = re.compile(r"^gce://(?P<project>[^/]+)/(?P<zone>[^/]+)/(?P<name>[^/]+)$")
_GCE_RESOURCE = re.compile(r"projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)$")


def resource_key(text: str | None) -> str | None:
    """The instance a provider id or a bill's ResourceId names, in one form for both: ``aws:i-0abc`` (an EC2
    instance id anywhere in it: ``aws:///us-east-1a/i-0abc``, ``i-0abc``, an ARN), ``gce:project/zone/name``
    (``gce://...`` or a ``//compute.googleapis.com/projects/.../zones/.../instances/...`` path), else the text
    lowercased without an ``azure://`` prefix (ARM ids, whose case Azure does not keep)."""
    if not text:
        return None
    value = text.strip()
    aws = _AWS_INSTANCE.search(value)
    if aws is not None:
        return f"aws:{aws.group(0)}"
    gce = _GCE_PROVIDER.match(value) or _GCE_RESOURCE.search(value)
    if gce is not None:
        return f"gce:{gce['project']}/{gce['zone']}/{gce['name']}"
    return value.removeprefix("azure://").lower() or None


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """``2026-05`` for a calendar month, else ``2026-05-01..2026-05-15`` (end exclusive)."""
    first = start.date()
    month_end = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    whole_month = first.day == 1 and start.time() == dt.time() and end.date() == month_end and end.time() == dt.time()
    return first.strftime("%Y-%m") if whole_month else f"{first.isoformat()}..{end.date().isoformat()}"


def bill_rates(lines: pl.DataFrame | pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bill rates of ``lines`` (rows of ``bill_lines``): (per resource, per instance type).

    Per resource: ``resource_key``, ``period_start``, ``period_end``, ``usd_per_node_hour``, ``bill_source``. Per
    instance type: ``instance_type``, ``region``, ``capacity_type`` and the same. Pure."""
    frame = lines.lazy() if isinstance(lines, pl.DataFrame) else lines
    usd = frame.filter(
        (pl.col("currency").is_null() | (pl.col("currency").str.to_uppercase() == "USD")) & (pl.col("usage_hours") > 0)
    ).with_columns(
        pl.col("resource_id").map_elements(resource_key, return_dtype=pl.String).alias("resource_key"),
        pl.col("billing_period_start").alias("period_start"),
        pl.col("billing_period_end").alias("period_end"),
    )
    rate = (pl.col("effective_cost").sum() / pl.col("usage_hours").sum()).alias("usd_per_node_hour")
    files = pl.col("file").unique().sort().str.join("+").alias("_files")
    by_resource = (
        usd.filter(pl.col("resource_key").is_not_null())
        .group_by("resource_key", "period_start", "period_end")
        .agg(rate, files, pl.col("resource_id").first())
        .collect()
    )
    by_type = (
        usd.filter(pl.col("instance_type").is_not_null())
        .group_by("instance_type", "region", "capacity_type", "period_start", "period_end")
        .agg(rate, files, pl.col("resource_key").n_unique().alias("_resources"))
        .collect()
    )
    by_resource = by_resource.with_columns(
        pl.Series(
            "bill_source",
            [
                f"{_prefix(r['_files'], r['period_start'], r['period_end'])}: resource {r['resource_id']}"
                for r in by_resource.iter_rows(named=True)
            ],
            dtype=pl.String,
        )
    ).select("resource_key", "period_start", "period_end", "usd_per_node_hour", "bill_source")
    by_type = by_type.with_columns(
        pl.Series(
            "bill_source",
            [
                f"{_prefix(r['_files'], r['period_start'], r['period_end'])}: mean effective cost of "
                f"{r['instance_type']} {r['capacity_type'] or 'on-demand'} in {r['region'] or 'any region'} "
                f"({r['_resources']} resource{'s' if r['_resources'] != 1 else ''})"
                for r in by_type.iter_rows(named=True)
            ],
            dtype=pl.String,
        )
    ).select(
        "instance_type", "region", "capacity_type", "period_start", "period_end", "usd_per_node_hour", "bill_source"
    )
    return by_resource, by_type


def _prefix(files: str, start: dt.datetime, end: dt.datetime) -> str:
    return f"bill (FOCUS, {files}, {period_label(start, end)})"


def match_bill(nodes: pl.DataFrame, rates: tuple[pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
    """``nodes`` (rows of the ``nodes`` table: ``date``, and ``provider_id``, ``instance_type``, ``region``,
    ``capacity_type`` where known) with ``bill_usd_per_node_hour`` and ``bill_source`` added: the node's own
    resource's rate in the billing period holding its date, else its instance type's (see the module docstring);
    null where the bill has neither. Row order kept."""
    by_resource, by_type = rates
    work = nodes.with_row_index("_i").with_columns(
        (pl.col("provider_id") if "provider_id" in nodes.columns else pl.lit(None, dtype=pl.String))
        .map_elements(resource_key, return_dtype=pl.String)
        .alias("_key"),
        pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("_at"),
        pl.col("capacity_type").fill_null("on-demand").alias("_capacity"),
    )
    within = (pl.col("_at") >= pl.col("period_start")) & (pl.col("_at") < pl.col("period_end"))
    own = (
        work.select("_i", "_key", "_at")
        .join(by_resource, left_on="_key", right_on="resource_key")
        .filter(within)
        .sort("_i", "period_start", descending=[False, True])
        .unique("_i", keep="first")
        .select("_i", pl.col("usd_per_node_hour").alias("_own_usd"), pl.col("bill_source").alias("_own_source"))
    )
    typed = (
        work.select("_i", "instance_type", "region", "_capacity", "_at")
        .join(
            by_type,
            left_on=["instance_type", "region", "_capacity"],
            right_on=["instance_type", "region", "capacity_type"],
        )
        .filter(within)
        .sort("_i", "period_start", descending=[False, True])
        .unique("_i", keep="first")
        .select("_i", pl.col("usd_per_node_hour").alias("_type_usd"), pl.col("bill_source").alias("_type_source"))
    )
    out = (
        work.join(own, on="_i", how="left")
        .join(typed, on="_i", how="left")
        .sort("_i")
        .with_columns(
            pl.coalesce("_own_usd", "_type_usd").alias("bill_usd_per_node_hour"),
            pl.when(pl.col("_own_usd").is_not_null())
            .then(pl.col("_own_source"))
            .otherwise(pl.col("_type_source"))
            .alias("bill_source"),
        )
    )
    return out.drop("_i", "_key", "_at", "_capacity", "_own_usd", "_own_source", "_type_usd", "_type_source")
