"""MIG fit and packing: which workloads could run on a MIG slice of their GPU, and how many GPUs that would free.

Definitions (ARCHITECTURE.md "MIG fit"; tests/test_mig.py pins each of them):

**Catalog.** ``analysis/data/mig_catalog.json`` lists the GPU-instance profiles of each MIG-capable GPU model: compute
slices (the N of "Ng"), the memory NVML reports (MiB), SM count, max instances per GPU and the valid placements (start
slot and size on the memory-slot grid: 8 slots for 7 compute slices, 4 for A30's 4). Every value names its source:
"real: ..." (the H200 NVML capture, GFD labels of a real H100, nvidia-smi XML of a real A100), "derived: ..." (how),
the go-nvml mock geometry, mig-parted's counts, the MIG User Guide placement rules; ``analysis/data/SOURCES.md`` says
where each comes from. Telemetry names ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3") map to entries after
case-folding and treating "-"/"_" as spaces; L4, A10G, T4 and the like are "not MIG-capable".

**Compute fraction of a profile** = its SMs / the full GPU's SMs where the SM counts come from real data (H200, H100,
A100), else slices / compute slices (A30, B200, whose SM counts are only derived). Utilization is measured against the
whole GPU, so this is the share of the GPU a profile gives.

**Demand** (after the Kubernetes VPA recommender: kubernetes/autoscaler ``vertical-pod-autoscaler/pkg/recommender/``
``util/histogram_options.go``, ``util/histogram.go``, ``util/decaying_histogram.go``, ``logic/estimator.go``). Only
observed, held minutes count (``state != "no_data"`` and ``workload`` set). Each minute's utilization u is
``sm_active_mean`` when present, else ``util_mean_pct / 100``, as a fraction of the whole GPU (on a MIG instance, times
the instance's compute fraction). Minutes go into a histogram with exponential buckets (bucket i starts at
``first * (ratio**i - 1) / (ratio - 1)``; defaults first 0.001, ratio 1.02, so a percentile reads at most ~2% high)
weighted ``2 ** ((t - t_last) / half_life)`` (half-life 24 h: yesterday counts half). The percentile (default p95) is
the end of the bucket where the cumulative weight reaches p of the total, as VPA returns it.

**Confidence** = ``min(history span in days, observed minutes / 1440)``, VPA's ``getConfidence`` (the span includes
the last minute, so one minute is 1/1440 day, never 0). VPA's upper bound multiplies the whole estimate by
``(1 + 1/confidence)``; here only the safety margin is scaled by it: ``compute demand = percentile x (1 + (margin - 1)
x (1 + 1/confidence))``. With a week of history a 1.15 margin becomes 1.171, with one day 1.30, with one hour 4.75, so
short histories need a bigger slice and long ones tend to the plain margin. Memory demand = peak
``fb_used_max_bytes`` x memory margin (default 1.1).

**Fit** = the smallest profile of the model (fewest compute slices, then fewest memory slots, then least memory) whose
compute fraction >= compute demand and memory >= memory demand. Media-extension ("+me") profiles are never proposed
(one per GPU, for video work). The whole-GPU profile is no saving: such a workload gets ``fits=false``, that profile,
and a reason "needs the whole GPU (memory: ... / compute: ...)".

**Packing**: the fitting workloads (x the most devices they held at once) are packed first-fit decreasing (by compute
slices, then memory slots) onto GPUs of their model. A GPU accepts a set of instances when each profile stays within
its max instance count, the compute slices within the GPU's, and an exact search finds a start for every instance among
its profile's valid placements with no two ``[start, start + size)`` overlapping.

**Savings**: ``gpus_now`` = distinct ``gpu_uuid`` the fitting workloads held in the window (per model),
``gpus_needed`` = GPUs in the packing, freed = max(0, now - needed), savings per month = freed x the GPU-hour price
x 730. Prices come in as a mapping with a source per model: this module looks up no price. A GPU that a fitting
workload shared in the window with one that does not fit still counts in ``gpus_now``: the estimate assumes the
fitting workloads' GPUs go back whole.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from analysis.errors import AnalysisError

CATALOG_JSON = Path(__file__).parent / "data" / "mig_catalog.json"
MIB = 1 << 20
GIB = 1 << 30
HOURS_PER_MONTH = 730.0
MINUTES_PER_DAY = 1440.0
KEYS = ("namespace", "workload", "gpu_model")
REPORT_COLUMNS = ("namespace", "workload", "gpu_model", "peak_mem_gib", "util_pct_p95", "profile", "fits")


class NotMigCapable(AnalysisError):
    def __init__(self, gpu_model: str) -> None:
        self.gpu_model = gpu_model
        super().__init__(f"GPU model {gpu_model} is not MIG-capable")


class UnknownGpuModel(AnalysisError):
    def __init__(self, gpu_model: str | None) -> None:
        self.gpu_model = gpu_model
        if gpu_model is None:
            super().__init__("GPU model unknown: the telemetry names no gpu_model, so MIG fit is not assessed")
        else:
            super().__init__(
                f"GPU model {gpu_model!r} is not in the MIG catalog (analysis/data/mig_catalog.json), so MIG fit is "
                "not assessed; add its profiles, with their sources, to assess it"
            )


class UnknownMigProfile(AnalysisError):
    def __init__(self, model: str, profile: str, known: Sequence[str]) -> None:
        super().__init__(f"MIG profile {profile!r} does not exist on {model}; its profiles: {', '.join(known)}")


class MissingGpuPrice(AnalysisError):
    def __init__(self, gpu_model: str, freed: int) -> None:
        super().__init__(
            f"no GPU-hour price for {gpu_model}, of which MIG packing frees {freed} GPU(s): "
            f"pass prices[{gpu_model!r}] (USD per GPU-hour, >= 0) and its source"
        )


class InvalidMigAssumption(AnalysisError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid MIG fit setting: {detail}")


# ---------------------------------------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class MigProfile:
    """One GPU-instance profile of one GPU model; every figure carries its source (see the module docstring)."""

    name: str
    slices: int
    """Compute slices: the N of "Ng"."""
    memory_slots: int
    """Size on the placement grid: an instance at ``start`` occupies ``[start, start + memory_slots)``."""
    placements: tuple[int, ...]
    """Valid start slots."""
    memory_mib: int
    sm_count: int
    max_instances: int
    compute_fraction: float
    """Share of the whole GPU's compute: SMs / full-GPU SMs, or slices / compute slices (see ``MigGpu``)."""
    nvml_profile: str
    memory_source: str
    sm_source: str
    max_instances_source: str
    placement_source: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def media_extended(self) -> bool:
        return "+me" in self.name

    @property
    def size_key(self) -> tuple[int, int, int, int, str]:
        """Order of "smaller": compute slices, memory slots, memory, SMs, then the name."""
        return (self.slices, self.memory_slots, self.memory_mib, self.sm_count, self.name)


@dataclass(frozen=True)
class MigGpu:
    """A MIG-capable GPU model: its grid, its full-GPU SM count and its profiles, smallest first."""

    model: str
    telemetry_names: tuple[str, ...]
    pci_device_ids: tuple[str, ...]
    compute_slices: int
    memory_slots: int
    gpu_sms: int
    gpu_sms_source: str
    compute_basis: str
    """``sms`` (compute fraction = SMs / gpu_sms) or ``slices`` (= slices / compute_slices)."""
    profiles: tuple[MigProfile, ...]

    def profile(self, name: str) -> MigProfile:
        """The profile called ``name`` ("3g.40gb"; an NVML "MIG 3g.40gb" works too)."""
        wanted = name.removeprefix("MIG ").strip()
        for p in self.profiles:
            if p.name == wanted:
                return p
        raise UnknownMigProfile(self.model, name, [p.name for p in self.profiles])

    @property
    def whole(self) -> MigProfile:
        """The profile that takes every compute slice (7g, or A30's 4g): no saving."""
        return max(self.profiles, key=lambda p: p.size_key)

    @property
    def sub_gpu(self) -> tuple[MigProfile, ...]:
        """Profiles a workload may be fitted to: smaller than the whole GPU and without media extensions."""
        whole = self.whole
        return tuple(p for p in self.profiles if p is not whole and not p.media_extended)

    def rank(self, profile: str) -> int:
        """Position of ``profile`` in the size order (0 = smallest); the whole GPU ranks last."""
        return [p.name for p in self.profiles].index(self.profile(profile).name)


def _norm(name: str) -> str:
    text = re.sub(r"[-_\s]+", " ", name.casefold()).strip()
    for prefix in ("nvidia ", "tesla "):
        text = text.removeprefix(prefix)
    return text


@dataclass(frozen=True)
class MigCatalog:
    """The shipped MIG catalog: the profiles per GPU model and the families that have no MIG."""

    gpus: tuple[MigGpu, ...]
    not_mig_capable: frozenset[str]
    sources: Mapping[str, str] = field(default_factory=dict)

    def gpu(self, gpu_model: str | None) -> MigGpu:
        """The catalog entry for a telemetry GPU model name.

        Raises ``NotMigCapable`` for models without MIG (L4, A10G, T4...) and ``UnknownGpuModel`` otherwise.
        """
        if gpu_model is None:
            raise UnknownGpuModel(None)
        key = _norm(gpu_model)
        for gpu in self.gpus:
            if key in {_norm(gpu.model), *(_norm(n) for n in gpu.telemetry_names)}:
                return gpu
        if key.split(" ", 1)[0].upper() in self.not_mig_capable:
            raise NotMigCapable(gpu_model)
        raise UnknownGpuModel(gpu_model)

    def frame(self) -> pl.DataFrame:
        """One row per (model, profile), smallest profile first, with every value's source."""
        rows = [
            {
                "model": gpu.model,
                "profile": p.name,
                "nvml_profile": p.nvml_profile,
                "slices": p.slices,
                "memory_slots": p.memory_slots,
                "placements": list(p.placements),
                "memory_mib": p.memory_mib,
                "memory_gib": p.memory_gib,
                "sm_count": p.sm_count,
                "gpu_sms": gpu.gpu_sms,
                "compute_fraction": p.compute_fraction,
                "max_instances": p.max_instances,
                "memory_source": p.memory_source,
                "sm_source": p.sm_source,
                "max_instances_source": p.max_instances_source,
                "placement_source": p.placement_source,
            }
            for gpu in self.gpus
            for p in gpu.profiles
        ]
        return pl.DataFrame(rows)


def _gpu_from_json(entry: Mapping[str, Any]) -> MigGpu:
    basis = entry["compute_fraction"]
    if basis not in ("sms", "slices"):
        raise ValueError(f"{entry['model']}: compute_fraction must be 'sms' or 'slices', not {basis!r}")
    profiles = []
    for p in entry["profiles"]:
        fraction = p["sm_count"] / entry["gpu_sms"] if basis == "sms" else p["slices"] / entry["compute_slices"]
        profiles.append(
            MigProfile(
                name=p["name"],
                slices=p["slices"],
                memory_slots=p["memory_slots"],
                placements=tuple(p["placements"]),
                memory_mib=p["memory_mib"],
                sm_count=p["sm_count"],
                max_instances=p["max_instances"],
                compute_fraction=fraction,
                nvml_profile=p["nvml_profile"],
                memory_source=p["memory_source"],
                sm_source=p["sm_source"],
                max_instances_source=p["max_instances_source"],
                placement_source=p["placement_source"],
            )
        )
    return MigGpu(
        model=entry["model"],
        telemetry_names=tuple(entry["telemetry_names"]),
        pci_device_ids=tuple(entry["pci_device_ids"]),
        compute_slices=entry["compute_slices"],
        memory_slots=entry["memory_slots"],
        gpu_sms=entry["gpu_sms"],
        gpu_sms_source=entry["gpu_sms_source"],
        compute_basis=basis,
        profiles=tuple(sorted(profiles, key=lambda p: p.size_key)),
    )


@cache
def load_catalog(path: Path = CATALOG_JSON) -> MigCatalog:
    """Read the MIG catalog (shipped with the package; sources in ``analysis/data/SOURCES.md``)."""
    raw = json.loads(path.read_text())
    return MigCatalog(
        gpus=tuple(_gpu_from_json(g) for g in raw["gpus"]),
        not_mig_capable=frozenset(f.upper() for f in raw["not_mig_capable"]["families"]),
        sources=dict(raw["sources"]),
    )


# ----------------------------------------------------------------------------------------------------------- demand


@dataclass(frozen=True)
class MigAssumptions:
    """The knobs of the demand estimate (settings), reported with every result."""

    percentile: float = 0.95
    compute_margin: float = 1.15
    """Safety margin on the compute percentile (VPA's default 15%), before scaling by confidence."""
    memory_margin: float = 1.10
    half_life: timedelta = timedelta(hours=24)
    first_bucket: float = 0.001
    """Width of the first histogram bucket, as a fraction of the GPU."""
    bucket_ratio: float = 1.02
    """Each bucket is this much wider than the one before (VPA uses 1.05 for CPU)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile <= 1.0:
            raise InvalidMigAssumption(f"percentile must be in (0, 1], got {self.percentile}")
        if self.compute_margin < 1.0 or self.memory_margin < 1.0:
            raise InvalidMigAssumption(
                f"margins are multipliers >= 1 (1.15 = +15%), got compute {self.compute_margin}, "
                f"memory {self.memory_margin}"
            )
        if self.half_life <= timedelta(0):
            raise InvalidMigAssumption(f"half-life must be positive, got {self.half_life}")
        if self.first_bucket <= 0.0 or self.bucket_ratio <= 1.0:
            raise InvalidMigAssumption(
                f"histogram buckets need first > 0 and ratio > 1, got {self.first_bucket}, {self.bucket_ratio}"
            )

    @property
    def buckets(self) -> int:
        """Number of buckets, so that the last one starts at or above a whole GPU (VPA's NumBuckets)."""
        r, f = self.bucket_ratio, self.first_bucket
        return math.ceil(math.log(1.0 * (r - 1) / f + 1, r)) + 1

    def bucket_start(self, i: int) -> float:
        r = self.bucket_ratio
        return self.first_bucket * (r**i - 1) / (r - 1)

    def margin(self, confidence: float) -> float:
        """The compute multiplier for a history of this confidence: ``1 + (margin - 1) x (1 + 1/confidence)``."""
        return 1.0 + (self.compute_margin - 1.0) * (1.0 + 1.0 / confidence)

    def as_dict(self) -> dict[str, Any]:
        return {
            "percentile": self.percentile,
            "compute_margin": self.compute_margin,
            "memory_margin": self.memory_margin,
            "half_life_hours": self.half_life.total_seconds() / 3600,
            "histogram": (
                f"exponential buckets (first {self.first_bucket} of a GPU, ratio {self.bucket_ratio}), minutes "
                "weighted 2^((t - t_last) / half-life); the percentile is the end of its bucket (VPA)"
            ),
            "confidence": (
                "min(history span in days, observed minutes / 1440) (VPA getConfidence); compute demand = "
                "percentile x (1 + (compute_margin - 1) x (1 + 1/confidence))"
            ),
            "utilization": (
                "sm_active_mean when present, else util_mean_pct / 100, as a fraction of the whole GPU "
                "(on a MIG instance, times the instance's compute fraction)"
            ),
            "memory": "memory demand = peak fb_used_max_bytes x memory_margin",
            "fit": (
                "smallest sub-GPU profile (no +me) with compute fraction >= compute demand and memory >= memory "
                "demand; a workload that needs the whole-GPU profile is no saving"
            ),
            "hours_per_month": HOURS_PER_MONTH,
        }


DEFAULT_ASSUMPTIONS = MigAssumptions()

DEMAND_SCHEMA: dict[str, pl.DataType] = {
    "namespace": pl.String(),
    "workload": pl.String(),
    "gpu_model": pl.String(),
    "minutes": pl.Int64(),
    "gpu_hours": pl.Float64(),
    "replicas": pl.Int64(),
    "gpu_uuids": pl.List(pl.String()),
    "util_pct_p95": pl.Float64(),
    "peak_mem_gib": pl.Float64(),
    "confidence": pl.Float64(),
    "compute_demand": pl.Float64(),
    "memory_demand_gib": pl.Float64(),
}


def _instance_fraction(catalog: MigCatalog, model: str | None, profile: str) -> float | None:
    """A MIG instance's share of its GPU: the catalog's compute fraction, else its "Ng" over the compute slices."""
    compute_slices = 7
    try:
        gpu = catalog.gpu(model)
    except AnalysisError:
        pass
    else:
        compute_slices = gpu.compute_slices
        try:
            return gpu.profile(profile).compute_fraction
        except UnknownMigProfile:
            pass
    match = re.match(r"(?:MIG )?(\d+)g\.", profile)
    return int(match[1]) / compute_slices if match else None


def _memory_candidates(peaks: pl.DataFrame, catalog: MigCatalog, a: MigAssumptions) -> pl.DataFrame:
    """Keys (namespace, workload, gpu_model) of MIG-capable models whose peak memory (``fb_used_max_bytes``) x
    margin fits their largest sub-GPU profile, or whose memory is unknown."""
    keep = []
    for namespace, workload, model, peak in peaks.select(*KEYS, "fb_used_max_bytes").iter_rows():
        if not _mig_capable(catalog, model):
            continue
        largest = max(p.memory_bytes for p in catalog.gpu(model).sub_gpu)
        if peak is None or peak * a.memory_margin <= largest:
            keep.append((namespace, workload, model))
    return pl.DataFrame(keep, schema={k: pl.String for k in KEYS}, orient="row")


def _mig_capable(catalog: MigCatalog, model: str | None) -> bool:
    try:
        catalog.gpu(model)
    except AnalysisError:
        return False
    return True


def _instance_fractions(held: pl.LazyFrame, catalog: MigCatalog) -> pl.DataFrame:
    """(gpu_model, mig_profile) -> the instance's share of the whole GPU, for the MIG instances in ``held``."""
    pairs = (
        held.filter(pl.col("mig_profile").is_not_null())
        .select("gpu_model", "mig_profile")
        .unique()
        .collect(engine="streaming")
    )
    fractions = [_instance_fraction(catalog, model, profile) for model, profile in pairs.iter_rows()]
    return pairs.with_columns(pl.Series("instance_fraction", fractions, dtype=pl.Float64))


def percentile(buckets: Sequence[int], weights: Sequence[float], p: float, assumptions: MigAssumptions) -> float:
    """VPA's ``histogram.Percentile``: the end of the first bucket (ascending) where the cumulative weight reaches
    ``p`` of the total; the start of the last bucket when it is that one. 0.0 for an empty histogram."""
    if not buckets:
        return 0.0
    order = sorted(range(len(buckets)), key=lambda i: buckets[i])
    partial = list(itertools.accumulate(weights[i] for i in order))
    threshold = p * partial[-1]
    chosen = next(buckets[i] for i, s in zip(order, partial, strict=True) if s >= threshold)
    last = assumptions.buckets - 1
    return assumptions.bucket_start(chosen + 1 if chosen < last else chosen)


def demand(
    minutes: pl.LazyFrame,
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
    peaks: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Compute and memory demand per (namespace, workload, gpu_model) from ``gpu_minutes`` rows of a window.

    Columns: the keys, ``minutes`` (observed minutes with a utilization reading), ``gpu_hours`` (held GPU-minutes / 60,
    a MIG instance's minute counting as its share of the GPU), ``replicas`` (most devices held in one minute),
    ``gpu_uuids`` (GPUs held), ``util_pct_p95`` (the decayed percentile, % of the GPU, whatever ``percentile`` is),
    ``peak_mem_gib``, ``confidence``, ``compute_demand`` (fraction of a GPU) and ``memory_demand_gib``. Demands are
    null when there was nothing to measure (no utilization or no memory reading), never NaN. An empty window gives an
    empty frame with these columns.
    """
    catalog = catalog or load_catalog()
    histogram, devices = demand_parts(minutes, assumptions, catalog, gpu_models)
    if peaks is not None:
        # A compute percentile only for workloads whose memory could fit some sub-GPU profile of their model: for
        # the others memory alone decides (and whole-GPU jobs are most of a fleet's minutes).
        histogram = histogram.filter(_candidate_filter(peaks, catalog, assumptions))
    hist_days, devices_df = pl.collect_all([histogram, devices], engine="streaming")
    return demand_from_parts(hist_days, devices_df, assumptions)


def _candidate_filter(peaks: pl.DataFrame, catalog: MigCatalog, a: MigAssumptions) -> pl.Expr:
    candidates = _memory_candidates(peaks, catalog, a)
    return pl.col("workload").is_in(candidates["workload"].unique().to_list()) & pl.col("gpu_model").is_in(
        candidates["gpu_model"].unique().to_list()
    )


def demand_parts(
    minutes: pl.LazyFrame,
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The two sums ``demand`` is computed from, both decomposable by day (so a window's can be added up from daily
    ones): the decaying histogram per (keys, bucket, day) with weights relative to the day's start, and per
    (keys, gpu_uuid) the minutes, first and last measured time, GPU share and peak memory.

    ``gpu_models``: when given, only these models' MIG-capable ones get a histogram.
    """
    catalog = catalog or load_catalog()
    a = assumptions
    held = minutes.filter((pl.col("state") != "no_data") & pl.col("workload").is_not_null())
    fractions = _instance_fractions(held, catalog)
    if fractions.height:
        rows = held.join(fractions.lazy(), on=["gpu_model", "mig_profile"], how="left")
        whole = pl.when(pl.col("mig_profile").is_null()).then(1.0).otherwise(pl.col("instance_fraction"))
    else:  # no MIG instance in the window (the usual case): skip the join over every minute
        rows, whole = held, pl.lit(1.0)
    util = pl.coalesce(
        pl.col("sm_active_mean").cast(pl.Float64).fill_nan(None),
        pl.col("util_mean_pct").cast(pl.Float64).fill_nan(None) / 100.0,
    ).clip(0.0, 1.0)
    rows = rows.with_columns(whole.alias("whole"), pl.col("ts").dt.epoch("s").alias("t")).with_columns(
        (util * pl.col("whole")).alias("u")
    )
    measured = rows.filter(pl.col("u").is_not_null())
    if gpu_models is not None:  # no utilization histogram for models that cannot be cut into MIG instances
        capable = [m for m in gpu_models if _mig_capable(catalog, m)]
        measured = measured.filter(pl.col("gpu_model").is_in(capable))

    # The bucket of each minute by binary search over the bucket starts (the same starts ``bucket_start`` gives):
    # bucket i holds [start(i), start(i+1)); values past the last start land in the last bucket.
    starts = pl.Series("starts", [a.bucket_start(i) for i in range(a.buckets)], dtype=pl.Float64)
    bucket = (pl.lit(starts).search_sorted(pl.col("u"), side="right").cast(pl.Int64) - 1).clip(0, a.buckets - 1)
    # Decay weight 2^((t - t_last) / half-life), computed without a window function over every minute: within each
    # day relative to the day's start (a bounded exponent), then per key relative to its last day on the small
    # aggregated frame. Scaling all of a key's weights by one constant leaves its percentiles unchanged.
    rate = math.log(2.0) / a.half_life.total_seconds()
    day = (pl.col("t") // 86400) * 86400
    histogram = (
        measured.with_columns(bucket.alias("bucket"), day.alias("day"))
        .group_by(*KEYS, "bucket", "day")
        .agg(((pl.col("t") - pl.col("day")).cast(pl.Float64) * rate).exp().sum().alias("w"))
    )
    # One pass per (key, GPU) gives both the per-key figures and the GPUs each key held (a second pass over
    # every minute for the per-key figures alone would cost as much again).
    measured_t = pl.when(pl.col("u").is_not_null()).then(pl.col("t"))
    devices = rows.group_by(*KEYS, "gpu_uuid").agg(
        pl.len().alias("rows"),
        pl.col("u").is_not_null().sum().cast(pl.Int64).alias("device_minutes"),
        measured_t.min().alias("t_first"),
        measured_t.max().alias("t_last"),
        pl.col("whole").fill_null(1.0).sum().alias("whole_minutes"),
        pl.col("fb_used_max_bytes").max().alias("peak_bytes"),
    )
    return histogram, devices


def combine_demand_parts(
    histograms: pl.DataFrame, devices: pl.DataFrame, peaks: pl.DataFrame | None, assumptions: MigAssumptions
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Add up daily ``demand_parts`` (a key's days may come from several pieces of one day) into a window's."""
    histograms = histograms.group_by(*KEYS, "bucket", "day").agg(pl.col("w").sum())
    if peaks is not None:
        histograms = histograms.filter(_candidate_filter(peaks, load_catalog(), assumptions))
    devices = devices.group_by(*KEYS, "gpu_uuid").agg(
        pl.col("rows").sum(),
        pl.col("device_minutes").sum(),
        pl.col("t_first").min(),
        pl.col("t_last").max(),
        pl.col("whole_minutes").sum(),
        pl.col("peak_bytes").max(),
    )
    return histograms, devices


def demand_from_parts(
    hist_days: pl.DataFrame, devices_df: pl.DataFrame, assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS
) -> pl.DataFrame:
    """``demand``'s result from its collected parts (see ``demand_parts``)."""
    a = assumptions
    rate = math.log(2.0) / a.half_life.total_seconds()
    stats_df = (
        devices_df.group_by(KEYS)
        .agg(
            pl.col("device_minutes").sum(),
            pl.col("t_first").min(),
            pl.col("t_last").max(),
            (pl.col("whole_minutes").sum() / 60.0).alias("gpu_hours"),
            pl.col("peak_bytes").max(),
            pl.col("gpu_uuid").drop_nulls().unique().sort().alias("gpu_uuids"),
            # devices held at once: all device-minutes over the busiest device's minutes, rounded up
            (pl.col("rows").sum() / pl.col("rows").max()).ceil().cast(pl.Int64).alias("replicas"),
        )
        .with_columns(
            # minutes with a utilization reading: device-minutes over the devices held at once
            (pl.col("device_minutes") / pl.col("replicas")).round().cast(pl.Int64).alias("minutes"),
        )
    )
    hist_df = (
        hist_days.with_columns(
            pl.col("w") * ((pl.col("day") - pl.col("day").max().over(KEYS)).cast(pl.Float64) * rate).exp()
        )
        .group_by(*KEYS, "bucket")
        .agg(pl.col("w").sum())
        .sort(*KEYS, "bucket", nulls_last=True)
    )
    replicas_df = stats_df.select(*KEYS, "replicas")

    per_key: dict[tuple[Any, ...], float] = {}
    for key, group in itertools.groupby(hist_df.iter_rows(), key=lambda row: row[:3]):
        items = list(group)
        per_key[key] = percentile([row[3] for row in items], [row[4] for row in items], a.percentile, a)
    replica_of = {row[:3]: row[3] for row in replicas_df.iter_rows()}

    out = []
    for row in stats_df.iter_rows(named=True):
        key = (row["namespace"], row["workload"], row["gpu_model"])
        n = row["minutes"]
        confidence = 0.0
        p_value = compute = None
        if n:
            span_days = (row["t_last"] - row["t_first"] + 60) / 86400.0
            confidence = min(span_days, n / MINUTES_PER_DAY)
        if n and key in per_key:  # no histogram: a model that cannot be cut into MIG instances
            p_value = per_key[key]
            compute = p_value * a.margin(confidence)
        peak = row["peak_bytes"]
        out.append(
            {
                "namespace": row["namespace"],
                "workload": row["workload"],
                "gpu_model": row["gpu_model"],
                "minutes": n,
                "gpu_hours": row["gpu_hours"],
                "replicas": replica_of.get(key, 1),
                "gpu_uuids": row["gpu_uuids"],
                "util_pct_p95": None if p_value is None else min(p_value, 1.0) * 100.0,  # a bucket end may pass 100%
                "peak_mem_gib": None if peak is None else peak / GIB,
                "confidence": confidence,
                "compute_demand": compute,
                "memory_demand_gib": None if peak is None else peak * a.memory_margin / GIB,
            }
        )
    return pl.DataFrame(out, schema=DEMAND_SCHEMA).sort("gpu_model", "namespace", "workload", nulls_last=True)


# -------------------------------------------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class Fit:
    """The profile a demand fits (or the whole-GPU profile when none smaller does), and why not when it does not."""

    profile: MigProfile | None
    fits: bool
    reason: str | None


def fit_profile(gpu: MigGpu, compute_demand: float, memory_demand_bytes: float) -> Fit:
    """The smallest sub-GPU profile of ``gpu`` with compute fraction >= ``compute_demand`` (fraction of the GPU) and
    memory >= ``memory_demand_bytes``; otherwise the whole-GPU profile with ``fits=False`` and the reason."""
    for p in gpu.sub_gpu:
        if p.compute_fraction >= compute_demand and p.memory_bytes >= memory_demand_bytes:
            return Fit(p, True, None)
    largest_compute = max(p.compute_fraction for p in gpu.sub_gpu)
    largest_memory = max(p.memory_bytes for p in gpu.sub_gpu)
    parts = []
    if memory_demand_bytes > largest_memory:
        parts.append(
            f"memory: needs {memory_demand_bytes / GIB:.1f} GiB, largest sub-GPU profile {largest_memory / GIB:.1f} GiB"
        )
    if compute_demand > largest_compute:
        parts.append(f"compute: needs {compute_demand:.2f} of a GPU, largest sub-GPU profile {largest_compute:.2f}")
    if not parts:
        parts.append(
            f"no sub-GPU profile has both {compute_demand:.2f} of a GPU and {memory_demand_bytes / GIB:.1f} GiB"
        )
    return Fit(gpu.whole, False, f"needs the whole GPU ({'; '.join(parts)})")


def fit(demands: pl.DataFrame, catalog: MigCatalog | None = None) -> pl.DataFrame:
    """``demands`` (from ``demand``) with ``profile``, ``fits`` and ``reason`` (null when it fits)."""
    catalog = catalog or load_catalog()
    results = [_fit_row(catalog, row) for row in demands.iter_rows(named=True)]
    return demands.with_columns(
        pl.Series("profile", [r.profile.name if r.profile else None for r in results], dtype=pl.String),
        pl.Series("fits", [r.fits for r in results], dtype=pl.Boolean),
        pl.Series("reason", [r.reason for r in results], dtype=pl.String),
    )


def _fit_row(catalog: MigCatalog, row: Mapping[str, Any]) -> Fit:
    try:
        gpu = catalog.gpu(row["gpu_model"])
    except AnalysisError as err:
        return Fit(None, False, str(err))
    if row["compute_demand"] is None:
        memory = row["memory_demand_gib"]
        if memory is not None and memory * GIB > max(p.memory_bytes for p in gpu.sub_gpu):
            return fit_profile(gpu, 0.0, memory * GIB)  # memory alone rules out every sub-GPU profile
        return Fit(None, False, "no utilization readings in the window")
    if row["memory_demand_gib"] is None:
        return Fit(None, False, "no memory readings in the window")
    return fit_profile(gpu, row["compute_demand"], row["memory_demand_gib"] * GIB)


# ---------------------------------------------------------------------------------------------------------- packing


@dataclass(frozen=True)
class PackItem:
    """One MIG instance to place: a profile for one replica of one workload."""

    profile: str
    namespace: str | None = None
    workload: str | None = None
    replica: int = 0


@dataclass(frozen=True)
class Placement:
    """An instance on a GPU: ``profile`` at ``start``, occupying slots ``[start, start + size)``."""

    profile: str
    start: int
    size: int
    slices: int
    namespace: str | None = None
    workload: str | None = None
    replica: int = 0


@dataclass(frozen=True)
class GpuLayout:
    """One MIG GPU of the packing: its model (as telemetry names it), its index in that model, its instances."""

    gpu_model: str
    index: int
    placements: tuple[Placement, ...]

    @property
    def slices_used(self) -> int:
        return sum(p.slices for p in self.placements)

    def mig_devices(self) -> dict[str, int]:
        """Profile -> count, as mig-parted's ``mig-devices`` wants it."""
        counts: dict[str, int] = {}
        for p in self.placements:
            counts[p.profile] = counts.get(p.profile, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_model": self.gpu_model,
            "index": self.index,
            "mig_devices": self.mig_devices(),
            "placements": [
                {
                    "profile": p.profile,
                    "start": p.start,
                    "size": p.size,
                    "namespace": p.namespace,
                    "workload": p.workload,
                    "replica": p.replica,
                }
                for p in self.placements
            ],
        }


def _footprint(gpu: MigGpu, name: str) -> tuple[int, int, str]:
    """Largest footprint first, so the exact search places the hardest instances first."""
    p = gpu.profile(name)
    return (-p.memory_slots, -p.slices, p.name)


def _canonical(gpu: MigGpu, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(gpu.profile(n).name for n in sorted(names, key=lambda n: _footprint(gpu, n)))


def _arrange(gpu: MigGpu, names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Start slots for ``names`` (canonical order) on one GPU, or None when no valid arrangement exists."""
    profiles = [gpu.profile(n) for n in names]
    if sum(p.slices for p in profiles) > gpu.compute_slices:
        return None
    if sum(p.memory_slots for p in profiles) > gpu.memory_slots:
        return None
    for name in set(names):
        if names.count(name) > gpu.profile(name).max_instances:
            return None
    starts: list[int] = []

    def place(k: int, occupied: int) -> bool:
        if k == len(profiles):
            return True
        p = profiles[k]
        # identical profiles take increasing starts: the same arrangement is never tried twice
        floor = starts[k - 1] if k and names[k - 1] == names[k] else -1
        for s in p.placements:
            mask = ((1 << p.memory_slots) - 1) << s
            if s <= floor or occupied & mask:
                continue
            starts.append(s)
            if place(k + 1, occupied | mask):
                return True
            starts.pop()
        return False

    return tuple(starts) if place(0, 0) else None


def arrange(gpu: MigGpu, profiles: Sequence[str]) -> tuple[Placement, ...] | None:
    """A valid arrangement of ``profiles`` on one GPU of ``gpu`` (each at one of its profile's valid placements, no
    overlap, within instance counts and compute slices), or None when there is none. For checking mig-parted
    layouts."""
    names = _canonical(gpu, profiles)
    starts = _arrange(gpu, names)
    if starts is None:
        return None
    placed = [
        Placement(n, s, gpu.profile(n).memory_slots, gpu.profile(n).slices) for n, s in zip(names, starts, strict=True)
    ]
    return tuple(sorted(placed, key=lambda p: p.start))


def pack(gpu: MigGpu, items: Sequence[PackItem], gpu_model: str | None = None) -> tuple[GpuLayout, ...]:
    """First-fit decreasing: items by compute slices, then memory slots, then memory (then names, for a stable
    answer), each onto the first GPU that still has a valid arrangement with it added, else onto a new GPU."""
    model = gpu_model or gpu.model
    feasible: dict[tuple[str, ...], tuple[int, ...] | None] = {}

    def solve(names: tuple[str, ...]) -> tuple[int, ...] | None:
        if names not in feasible:
            feasible[names] = _arrange(gpu, names)
        return feasible[names]

    def order(item: PackItem) -> tuple[Any, ...]:
        p = gpu.profile(item.profile)
        return (
            -p.slices,
            -p.memory_slots,
            -p.memory_mib,
            p.name,
            item.namespace or "",
            item.workload or "",
            item.replica,
        )

    bins: list[list[PackItem]] = []
    free: list[tuple[int, int]] = []  # per bin: compute slices and memory slots still free (a cheap first test)
    for item in sorted(items, key=order):
        p = gpu.profile(item.profile)
        for b, contents in enumerate(bins):
            slices, slots = free[b]
            if p.slices > slices or p.memory_slots > slots:
                continue
            if solve(_canonical(gpu, [i.profile for i in (*contents, item)])) is not None:
                contents.append(item)
                free[b] = (slices - p.slices, slots - p.memory_slots)
                break
        else:
            bins.append([item])
            free.append((gpu.compute_slices - p.slices, gpu.memory_slots - p.memory_slots))

    layouts = []
    for index, contents in enumerate(bins):
        ordered = sorted(contents, key=lambda i: (_footprint(gpu, i.profile), order(i)))
        starts = solve(_canonical(gpu, [i.profile for i in ordered]))
        assert starts is not None, "a bin only ever holds an arrangeable set"
        placed = []
        for i, s in zip(ordered, starts, strict=True):
            p = gpu.profile(i.profile)
            placed.append(Placement(p.name, s, p.memory_slots, p.slices, i.namespace, i.workload, i.replica))
        layouts.append(GpuLayout(model, index, tuple(sorted(placed, key=lambda p: p.start))))
    return tuple(layouts)


# ---------------------------------------------------------------------------------------------------------- result


WORKLOAD_COLUMNS = (
    *REPORT_COLUMNS,
    "reason",
    "compute_demand",
    "memory_demand_gib",
    "confidence",
    "gpu_hours",
    "replicas",
    "gpus_held",
    "minutes",
)

BY_MODEL_SCHEMA: dict[str, pl.DataType] = {
    "gpu_model": pl.String(),
    "gpus_now": pl.Int64(),
    "gpus_needed": pl.Int64(),
    "gpus_freed": pl.Int64(),
    "usd_per_gpu_hour": pl.Float64(),
    "price_source": pl.String(),
    "savings_usd_month": pl.Float64(),
}


@dataclass(frozen=True)
class MigFit:
    """MIG fit of a window: per workload, per GPU model, the packing, and the assumptions behind them."""

    workloads: pl.DataFrame
    """One row per (namespace, workload, gpu_model): ``WORKLOAD_COLUMNS``."""
    by_model: pl.DataFrame
    """One row per GPU model with fitting workloads: ``BY_MODEL_SCHEMA``."""
    layouts: tuple[GpuLayout, ...]
    gpus_now: int
    gpus_needed: int
    savings_usd_month: float
    assumptions: dict[str, Any]

    @property
    def gpus_freed(self) -> int:
        return int(self.by_model["gpus_freed"].sum())

    def to_report(self) -> dict[str, Any]:
        """The report's ``mig_fit`` object (ARCHITECTURE.md keys first, then the detail)."""
        workloads = self.workloads.with_columns(
            pl.col("peak_mem_gib", "util_pct_p95", "memory_demand_gib", "gpu_hours").round(2),
            pl.col("compute_demand").round(4),
            pl.col("confidence").round(3),
        )
        return {
            "workloads": workloads.to_dicts(),
            "gpus_now": self.gpus_now,
            "gpus_needed": self.gpus_needed,
            "savings_usd_month": round(self.savings_usd_month, 2),
            "gpus_freed": self.gpus_freed,
            "by_model": self.by_model.with_columns(pl.col("savings_usd_month").round(2)).to_dicts(),
            "layouts": [layout.to_dict() for layout in self.layouts],
            "assumptions": self.assumptions,
        }


def mig_fit(
    minutes: pl.LazyFrame,
    prices: Mapping[str, float],
    price_sources: Mapping[str, str],
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
    gpu_models: Sequence[str | None] | None = None,
    peaks: pl.DataFrame | None = None,
) -> MigFit:
    """Demand, fit, packing and savings for the ``gpu_minutes`` rows of one window.

    ``prices``: USD per GPU-hour by GPU model as telemetry names it, with ``price_sources`` saying where each came
    from. A model whose packing frees GPUs must have a price (``MissingGpuPrice`` otherwise).
    """
    catalog = catalog or load_catalog()
    return fit_and_pack(
        demand(minutes, assumptions, catalog, gpu_models, peaks), prices, price_sources, assumptions, catalog
    )


def fit_and_pack(
    demands: pl.DataFrame,
    prices: Mapping[str, float],
    price_sources: Mapping[str, str],
    assumptions: MigAssumptions = DEFAULT_ASSUMPTIONS,
    catalog: MigCatalog | None = None,
) -> MigFit:
    """``mig_fit`` from already computed demands (``demand``, or ``demand_from_parts`` of daily summaries)."""
    catalog = catalog or load_catalog()
    fitted = fit(demands, catalog)
    workloads = fitted.with_columns(pl.col("gpu_uuids").list.len().cast(pl.Int64).alias("gpus_held")).select(
        WORKLOAD_COLUMNS
    )

    layouts: list[GpuLayout] = []
    by_model = []
    fitting = fitted.filter(pl.col("fits"))
    for (model,), group in sorted(fitting.group_by("gpu_model"), key=lambda g: str(g[0][0])):
        assert isinstance(model, str)
        items = [
            PackItem(row["profile"], row["namespace"], row["workload"], replica)
            for row in group.iter_rows(named=True)
            for replica in range(row["replicas"])
        ]
        packed = pack(catalog.gpu(model), items, model)
        layouts.extend(packed)
        now = len(set(itertools.chain.from_iterable(group["gpu_uuids"].to_list())))
        freed = max(0, now - len(packed))
        price = prices.get(model)
        if freed and (price is None or not math.isfinite(price) or price < 0):
            raise MissingGpuPrice(model, freed)
        by_model.append(
            {
                "gpu_model": model,
                "gpus_now": now,
                "gpus_needed": len(packed),
                "gpus_freed": freed,
                "usd_per_gpu_hour": price,
                "price_source": price_sources.get(model),
                "savings_usd_month": freed * (price or 0.0) * HOURS_PER_MONTH,
            }
        )
    models = pl.DataFrame(by_model, schema=BY_MODEL_SCHEMA)
    return MigFit(
        workloads=workloads,
        by_model=models,
        layouts=tuple(layouts),
        gpus_now=int(models["gpus_now"].sum()),
        gpus_needed=int(models["gpus_needed"].sum()),
        savings_usd_month=float(models["savings_usd_month"].sum()),
        assumptions={
            **assumptions.as_dict(),
            "catalog": "analysis/data/mig_catalog.json",
            "price_sources": {m: price_sources.get(m) for m in models["gpu_model"].to_list()},
        },
    )
