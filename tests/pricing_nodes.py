"""Rows of the warehouse `nodes` table for the price tests, and the shipped catalog they are priced by."""

from __future__ import annotations

import datetime as dt

import polars as pl

from analysis.pricing.catalog import PriceCatalog
from analysis.pricing.frames import price_nodes
from warehouse.ingest import conform
from warehouse.schema import NODES

CATALOG = PriceCatalog.build()
H100 = "NVIDIA H100 80GB HBM3"
AWS_OD = "AWS on-demand us-east-1, karpenter-provider-aws @1d927085, 2026-07-20"
DEFAULT = "fallback: OpenCost default 0.95 USD/GPU-hour"


def nodes(*rows: dict) -> pl.DataFrame:
    """Rows of the warehouse `nodes` table (its schema; missing columns null)."""
    base = {
        "date": dt.date(2026, 11, 2),
        "cluster": "c1",
        "node": "n",
        "instance_type": None,
        "capacity_type": "on-demand",
        "region": "us-east-1",
        "zone": None,
        "gpu_model": None,
        "gpu_count": None,
        "mig_strategy": "none",
        "labels": None,
    }
    table = conform(NODES, pl.DataFrame([base | r for r in rows], infer_schema_length=None).to_arrow())
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def one(catalog: PriceCatalog = CATALOG, **row: object) -> dict:
    return price_nodes(nodes(row), catalog).row(0, named=True)
