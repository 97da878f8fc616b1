"""The warehouse contract: every table's Arrow schema, key, partitioning and value checks, declared once.

Collectors build Arrow tables with these schemas; `warehouse.lake` validates against them before anything is
written; analysis reads the columns named here. Meanings (what "idle" is) live in `analysis/`, not here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""No telemetry is older than this: a stamp before it is a node clock reset to the epoch or a unit mix-up."""
FUTURE_SLACK = dt.timedelta(days=1)


def latest_plausible(now: dt.datetime) -> dt.datetime:
    """The latest time a stored sample may carry: a day after ``now`` (clocks drift; the future does not report)."""
    return now + FUTURE_SLACK


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


SOURCES = ("nvml", "dcgm-exporter", "prometheus", "simulator")
CAPACITY_TYPES = ("on-demand", "spot")


@dataclass(frozen=True)
class Table:
    """One warehouse table: its columns, its key, how it is partitioned on disk and what values it accepts."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    required: tuple[str, ...]
    time_column: str | None
    partition_by_cluster: bool
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    series: tuple[str, ...] = ()
    """Columns naming one time series (a GPU or MIG instance); each part records every series' first and last time."""
    any_of: tuple[str, ...] = ()
    """When set, every row must have at least one of these columns non-null (who holds a GPU: a pod or a pid)."""

    @property
    def columns(self) -> list[str]:
        return self.schema.names


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, dtype) for name, dtype in fields])


GPU_SAMPLES = Table(
    name="gpu_samples",
    schema=_schema(
        ("ts", UTC_TS),
        ("cluster", pa.string()),
        ("node", pa.string()),
        ("gpu_uuid", pa.string()),
        ("gpu_index", pa.int32()),
        ("mig_profile", pa.string()),
        ("mig_instance_id", pa.int32()),
        ("gpu_model", pa.string()),
        ("util_pct", pa.float32()),
        ("sm_active", pa.float32()),
        ("fb_used_bytes", pa.int64()),
        ("fb_total_bytes", pa.int64()),
        ("power_w", pa.float32()),
        ("energy_j", pa.float64()),
        ("temp_c", pa.float32()),
        ("sm_clock_mhz", pa.int32()),
        ("clock_event_reasons", pa.int64()),
        ("source", pa.string()),
    ),
    key=("gpu_uuid", "mig_instance_id", "ts"),
    required=("ts", "cluster", "node", "gpu_uuid", "source"),
    time_column="ts",
    partition_by_cluster=True,
    ranges={
        "util_pct": (0.0, 100.0),
        "sm_active": (0.0, 1.0),
        "fb_used_bytes": (0, None),
        "fb_total_bytes": (0, None),
        "power_w": (0.0, None),
        "energy_j": (0.0, None),
        "sm_clock_mhz": (0, None),
        "clock_event_reasons": (0, None),
        "gpu_index": (0, None),
    },
    allowed={"source": SOURCES},
    series=("gpu_uuid", "mig_instance_id"),
)

GPU_ALLOCATIONS = Table(
    name="gpu_allocations",
    schema=_schema(
        ("ts", UTC_TS),
        ("cluster", pa.string()),
        ("node", pa.string()),
        ("gpu_uuid", pa.string()),
        ("mig_instance_id", pa.int32()),
        ("namespace", pa.string()),
        ("pod", pa.string()),
        ("container", pa.string()),
        ("workload", pa.string()),
        ("pid", pa.int64()),
        ("process_fb_used_bytes", pa.int64()),
        ("process_util_pct", pa.float32()),
        ("source", pa.string()),
        ("process_name", pa.string()),
        ("claim", pa.string()),
        ("owner_kind", pa.string()),
        ("owner_name", pa.string()),
        ("owner_chain", pa.string()),
        ("cpu_request", pa.float64()),
        ("memory_request_bytes", pa.int64()),
    ),
    key=("gpu_uuid", "mig_instance_id", "ts", "namespace", "pod", "container", "pid"),
    required=("ts", "cluster", "node", "gpu_uuid", "source"),
    time_column="ts",
    partition_by_cluster=True,
    ranges={
        "process_fb_used_bytes": (0, None),
        "process_util_pct": (0.0, 100.0),
        "pid": (0, None),
        "cpu_request": (0.0, None),
        "memory_request_bytes": (0, None),
    },
    allowed={"source": SOURCES},
    any_of=("pod", "pid"),
)
"""Who held which GPU when. ``owner_kind`` and ``owner_name`` are the pod's top-level controller (``Deployment``,
``CronJob``, ``PyTorchJob``...) and ``owner_chain`` every owner up to it (``Pod<-ReplicaSet/x<-Deployment/y``), where a
source knows them; ``cpu_request`` (vCPUs) and ``memory_request_bytes`` are the pod's CPU and memory requests summed
over its containers (the same on each of the pod's rows), which the what-if node packing of recommendations counts
against a node's; parts written before these columns existed read them as null."""

NODES = Table(
    name="nodes",
    schema=_schema(
        ("date", pa.date32()),
        ("cluster", pa.string()),
        ("node", pa.string()),
        ("instance_type", pa.string()),
        ("capacity_type", pa.string()),
        ("region", pa.string()),
        ("zone", pa.string()),
        ("gpu_model", pa.string()),
        ("gpu_count", pa.int32()),
        ("mig_strategy", pa.string()),
        ("labels", pa.string()),
        ("provider_id", pa.string()),
    ),
    key=("cluster", "node", "date"),
    required=("date", "cluster", "node"),
    time_column="date",
    partition_by_cluster=False,
    ranges={"gpu_count": (0, None)},
    allowed={"capacity_type": CAPACITY_TYPES, "mig_strategy": ("none", "single", "mixed")},
)

PRICES = Table(
    name="prices",
    schema=_schema(
        ("cloud", pa.string()),
        ("region", pa.string()),
        ("instance_type", pa.string()),
        ("gpu_model", pa.string()),
        ("gpu_count", pa.int32()),
        ("on_demand_usd_per_hour", pa.float64()),
        ("spot_usd_per_hour", pa.float64()),
        ("interruption_bucket", pa.int8()),
        ("as_of", pa.date32()),
        ("source", pa.string()),
    ),
    key=("cloud", "region", "instance_type", "as_of"),
    required=("cloud", "instance_type", "as_of", "source"),
    time_column=None,
    partition_by_cluster=False,
    ranges={
        "gpu_count": (0, None),
        "on_demand_usd_per_hour": (0.0, None),
        "spot_usd_per_hour": (0.0, None),
        "interruption_bucket": (0, 4),
    },
)

SPLIT_METHODS = ("sm share", "memory share", "equal")
"""How a minute several holders share is divided among them (``analysis.shares`` decides; the rollup stores it)."""
HOLDER_SHARE = pa.struct(
    [
        pa.field("namespace", pa.string()),
        pa.field("pod", pa.string()),
        pa.field("container", pa.string()),
        pa.field("workload", pa.string()),
        pa.field("share", pa.float64()),
    ]
)
"""One holder's part of a shared GPU-minute; a minute's shares sum to 1."""

BILL_LINES = Table(
    name="bill_lines",
    schema=_schema(
        ("billing_period_start", UTC_TS),
        ("billing_period_end", UTC_TS),
        ("charge_period_start", UTC_TS),
        ("charge_period_end", UTC_TS),
        ("provider", pa.string()),
        ("billing_account_id", pa.string()),
        ("resource_id", pa.string()),
        ("instance_type", pa.string()),
        ("region", pa.string()),
        ("capacity_type", pa.string()),
        ("pricing_category", pa.string()),
        ("usage_hours", pa.float64()),
        ("effective_cost", pa.float64()),
        ("billed_cost", pa.float64()),
        ("list_cost", pa.float64()),
        ("currency", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("line_id", pa.string()),
    ),
    key=("line_id",),
    required=(
        "billing_period_start",
        "billing_period_end",
        "charge_period_start",
        "charge_period_end",
        "usage_hours",
        "effective_cost",
        "file",
        "line",
        "line_id",
    ),
    time_column="billing_period_start",
    partition_by_cluster=False,
    ranges={"usage_hours": (0.0, None)},
    allowed={"capacity_type": CAPACITY_TYPES},
)
"""Compute usage lines of a cloud's FOCUS cost export (``gpuledger import-bill``), one row per line priced in hours:
what the bill says an instance cost (``effective_cost``, discounts and amortized commitments included) for its
``usage_hours``. Partitioned by billing period; an import replaces the periods it covers (``warehouse.bills``)."""

GPU_MINUTES = Table(
    name="gpu_minutes",
    schema=_schema(
        ("ts", UTC_TS),
        ("cluster", pa.string()),
        ("node", pa.string()),
        ("gpu_uuid", pa.string()),
        ("gpu_index", pa.int32()),
        ("mig_profile", pa.string()),
        ("mig_instance_id", pa.int32()),
        ("gpu_model", pa.string()),
        ("samples", pa.int32()),
        ("util_mean_pct", pa.float32()),
        ("util_max_pct", pa.float32()),
        ("sm_active_mean", pa.float32()),
        ("fb_used_max_bytes", pa.int64()),
        ("fb_total_bytes", pa.int64()),
        ("held_memory_bytes", pa.int64()),
        ("power_mean_w", pa.float32()),
        ("energy_j", pa.float64()),
        ("namespace", pa.string()),
        ("pod", pa.string()),
        ("container", pa.string()),
        ("workload", pa.string()),
        ("owner_kind", pa.string()),
        ("cpu_request", pa.float64()),
        ("memory_request_bytes", pa.int64()),
        ("holders", pa.int32()),
        ("state", pa.string()),
        ("source", pa.string()),
        ("split_method", pa.string()),
        ("holder_shares", pa.list_(HOLDER_SHARE)),
    ),
    key=("gpu_uuid", "mig_instance_id", "ts"),
    required=("ts", "cluster", "gpu_uuid", "state"),
    time_column="ts",
    partition_by_cluster=True,
)

TABLES: dict[str, Table] = {t.name: t for t in (GPU_SAMPLES, GPU_ALLOCATIONS, NODES, PRICES, BILL_LINES, GPU_MINUTES)}
"""Every table the warehouse holds, by name."""

INGEST_TABLES = ("gpu_samples", "gpu_allocations", "nodes", "prices")
"""Tables that sources append to; `gpu_minutes` is derived by the rollup and only replaced, never appended."""
