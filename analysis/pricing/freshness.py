"""How old the shipped price snapshots are: a list price older than ``MAX_AGE_DAYS`` is flagged wherever it priced
something (README, Definitions, "Price freshness"; pinned by ``tests/test_pricing_freshness.py``).

Each snapshot is recognised by the ``price_source`` strings it gives (``analysis.pricing.shipped``). An AWS spot
estimate is on-demand x (1 - Spot Advisor savings), so it leans on two snapshots and flags both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from analysis.pricing.shipped import (
    AWS_ON_DEMAND_AS_OF,
    AWS_ON_DEMAND_ORIGIN,
    AWS_REGION,
    GCP_ORIGIN,
    aws_entries,
    gcp_entries,
)

MAX_AGE_DAYS = 90
FIX = (
    "import the bill (gpuledger import-bill FILE, a FOCUS cost export) or set instance-type price overrides "
    "(instance_type_usd_per_hour)"
)


@dataclass(frozen=True)
class Snapshot:
    """One shipped price snapshot: its name, its date and the ``price_source`` prefixes of the prices it gives."""

    name: str
    as_of: dt.date
    prefixes: tuple[str, ...]


@cache
def snapshots() -> tuple[Snapshot, ...]:
    """The shipped snapshots with their dates, as ``analysis/data/SOURCES.md`` lists them."""
    spot_dates = [
        dt.date.fromisoformat(e.spot_source.rsplit(", ", 1)[1]) for e in aws_entries() if e.spot_source is not None
    ]
    gcp_dates = [e.as_of for e in gcp_entries()]
    out = [
        Snapshot(
            f"AWS on-demand {AWS_REGION} prices ({AWS_ON_DEMAND_ORIGIN})",
            AWS_ON_DEMAND_AS_OF,
            (f"AWS on-demand {AWS_REGION}", "AWS spot estimate"),
        )
    ]
    if spot_dates:
        out.append(Snapshot("AWS Spot Advisor savings (us-east-1)", min(spot_dates), ("AWS spot estimate",)))
    if gcp_dates:
        out.append(
            Snapshot(f"GCP on-demand and spot prices ({GCP_ORIGIN})", min(gcp_dates), ("GCP on-demand", "GCP spot"))
        )
    return tuple(out)


def stale_prices(
    price_sources: Iterable[str], now: dt.datetime | dt.date, max_age_days: int = MAX_AGE_DAYS
) -> list[dict[str, object]]:
    """The snapshots older than ``max_age_days`` on ``now`` that gave one of ``price_sources``, oldest first:
    ``snapshot``, ``as_of`` (ISO date), ``age_days``, ``message`` (one sentence naming the snapshot, its date and the
    fix) and ``fix``."""
    today = now.date() if isinstance(now, dt.datetime) else now
    used = list(price_sources)
    out = []
    for snap in sorted(snapshots(), key=lambda s: s.as_of):
        age = (today - snap.as_of).days
        if age <= max_age_days or not any(src.startswith(snap.prefixes) for src in used):
            continue
        out.append(
            {
                "snapshot": snap.name,
                "as_of": snap.as_of.isoformat(),
                "age_days": age,
                "message": f"{snap.name} are from {snap.as_of.isoformat()}, {age} days old (over {max_age_days}): "
                f"{FIX}",
                "fix": FIX,
            }
        )
    return out
