"""The shipped price data: AWS on-demand us-east-1 with Spot Advisor spot estimates, GCP on-demand and spot, and
OpenCost's default GPU price. Sources and dates: ``analysis/data/SOURCES.md``."""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from functools import cache

from analysis.instances import DATA, instance_types

AWS_REGION = "us-east-1"
AWS_ON_DEMAND_AS_OF = dt.date(2026, 7, 20)
AWS_ON_DEMAND_ORIGIN = "karpenter-provider-aws @1d927085"
SPOT_ADVISOR_CSV = DATA / "aws_spot_advisor_us_east_1.csv"
GCP_CSV = DATA / "gcp_gpu_machine_types.csv"
GCP_ORIGIN = "google-cloud-pricing-cost-calculator @fd66b26f"
GCP_REGIONS = ("us-central1", "us-east4", "europe-west4")
"""GCP regions shipped, in order of preference as a stand-in for a region that has no shipped price."""
OPENCOST_DEFAULT_JSON = DATA / "opencost_default.json"


@dataclass(frozen=True)
class CatalogEntry:
    """One instance type in one region as shipped: node prices (USD per node-hour) and spot risk."""

    cloud: str
    region: str
    instance_type: str
    gpu_model: str
    gpu_count: int
    on_demand_usd_per_hour: float | None
    spot_usd_per_hour: float | None
    spot_savings_pct: float | None
    interruption_bucket: int | None
    as_of: dt.date
    on_demand_source: str
    spot_source: str | None


@cache
def aws_entries() -> tuple[CatalogEntry, ...]:
    """AWS us-east-1: on-demand prices, and spot estimated from the Spot Advisor savings."""
    advisor: dict[str, tuple[float, int, dt.date]] = {}
    with SPOT_ADVISOR_CSV.open() as handle:
        for row in csv.DictReader(handle):
            if row["region"] == AWS_REGION:
                advisor[row["instance_type"]] = (
                    float(row["savings_pct"]),
                    int(row["interruption_bucket"]),
                    dt.date.fromisoformat(row["as_of"]),
                )
    entries = []
    for itype in sorted(instance_types().values(), key=lambda t: t.name):
        on_demand = itype.on_demand_usd_per_hour
        savings, bucket, spot_as_of = advisor.get(itype.name, (None, None, None))
        spot = on_demand * (1 - savings / 100) if on_demand is not None and savings is not None else None
        entries.append(
            CatalogEntry(
                cloud="aws",
                region=AWS_REGION,
                instance_type=itype.name,
                gpu_model=itype.gpu_model,
                gpu_count=itype.gpu_count,
                on_demand_usd_per_hour=on_demand,
                spot_usd_per_hour=spot,
                spot_savings_pct=savings,
                interruption_bucket=bucket,
                as_of=AWS_ON_DEMAND_AS_OF,
                on_demand_source=f"AWS on-demand {AWS_REGION}, {AWS_ON_DEMAND_ORIGIN}, {AWS_ON_DEMAND_AS_OF}",
                spot_source=(
                    f"AWS spot estimate: on-demand x (1 - {savings:g}% Spot Advisor savings), {spot_as_of}"
                    if spot is not None and savings is not None
                    else None
                ),
            )
        )
    return tuple(entries)


@cache
def gcp_entries() -> tuple[CatalogEntry, ...]:
    """GCP on-demand and spot prices per machine type and region."""
    entries = []
    with GCP_CSV.open() as handle:
        for row in csv.DictReader(handle):
            as_of = dt.date.fromisoformat(row["as_of"])
            region = row["region"]
            spot = float(row["spot_usd_per_hour"]) if row["spot_usd_per_hour"] else None
            entries.append(
                CatalogEntry(
                    cloud="gcp",
                    region=region,
                    instance_type=row["machine_type"],
                    gpu_model=row["gpu_model"],
                    gpu_count=int(row["gpu_count"]),
                    on_demand_usd_per_hour=float(row["on_demand_usd_per_hour"]),
                    spot_usd_per_hour=spot,
                    spot_savings_pct=None,
                    interruption_bucket=None,
                    as_of=as_of,
                    on_demand_source=f"GCP on-demand {region}, {GCP_ORIGIN}, {as_of}",
                    spot_source=f"GCP spot {region}, {GCP_ORIGIN}, {as_of}" if spot is not None else None,
                )
            )
    return tuple(entries)


@cache
def opencost_default_gpu_usd_per_gpu_hour() -> float:
    """OpenCost's fallback GPU price (``configs/default.json`` ``"GPU"``): 0.95 USD per GPU-hour."""
    return float(json.loads(OPENCOST_DEFAULT_JSON.read_text())["GPU"])
