"""What one refresh of the cost metrics found: plain rows, ready to be rendered (``exposition.families``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

WINDOWS: tuple[tuple[str, float], ...] = (("1h", 1.0), ("24h", 24.0))
"""The windows the cost families carry (label ``window``), each ending at the warehouse's newest minute."""


@dataclass(frozen=True)
class Usage:
    """GPU-hours and dollars of one (cluster, window, state, namespace, workload, GPU model); namespace and workload
    are None for time no pod held."""

    cluster: str
    window: str
    state: str
    namespace: str | None
    workload: str | None
    gpu_model: str
    gpu_hours: float
    cost_usd: float


@dataclass(frozen=True)
class IdleWaste:
    cluster: str
    window: str
    namespace: str | None
    workload: str | None
    gpu_model: str
    gpu_hours: float
    cost_usd: float


@dataclass(frozen=True)
class PlanSavings:
    cluster: str
    kind: str
    usd_month: float


@dataclass(frozen=True)
class SilentGpus:
    cluster: str
    node: str
    gpu_model: str
    gpus: int


@dataclass(frozen=True)
class PriceFallback:
    cluster: str
    window: str
    price_source: str
    gpu_hours: float


@dataclass(frozen=True)
class CostSnapshot:
    """The cost metrics of one refresh. ``newest_minute``: per cluster, its newest GPU-minute;
    ``node_last_sample``: per (cluster, node), its newest sample in the last day; ``malformed_lines``: the
    warehouse's running count of unreadable source lines, by source."""

    computed_at: dt.datetime
    usage: tuple[Usage, ...] = ()
    idle_waste: tuple[IdleWaste, ...] = ()
    plan_savings: tuple[PlanSavings, ...] = ()
    silent_gpus: tuple[SilentGpus, ...] = ()
    price_fallbacks: tuple[PriceFallback, ...] = ()
    newest_minute: dict[str, dt.datetime] = field(default_factory=dict)
    node_last_sample: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    malformed_lines: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ScrapeHealth:
    """The follow scrape as the server saw it (``gpuledger.jobs.follow``'s steps)."""

    cluster: str
    last_success: dt.datetime | None = None
    failures: int = 0
    watermark: dt.datetime | None = None


@dataclass(frozen=True)
class ServerHealth:
    """The server's own figures: when the metrics were last refreshed and how many refreshes failed."""

    version: str
    refreshed_at: dt.datetime | None = None
    refresh_failures: int = 0
    scrape: ScrapeHealth | None = None
    """None when the server follows no Prometheus."""
