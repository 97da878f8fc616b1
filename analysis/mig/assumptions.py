"""The knobs of the MIG demand estimate (settings ``mig_*``), reported with every result; the definitions they
parametrise are in ``analysis.mig.demand``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from analysis.errors import AnalysisError
from analysis.units import HOURS_PER_MONTH

COMPUTE_MARGIN = 1.15
"""Default safety margin on a compute estimate (VPA's 15%): MIG fit, and the GPU-model recommendation."""
MEMORY_MARGIN = 1.10
"""Default safety margin on peak memory."""
MIN_HISTORY = timedelta(hours=24)
"""Default history a workload needs before MIG fit claims a profile for it: one daily load cycle (serving fleets
peak by time of day, so a shorter history can miss the peak), the same span as the default half-life. Below it the
short-history margin would be the only thing sizing the slice (4.75x at one hour, 1.30x at a day)."""


class InvalidMigAssumption(AnalysisError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid MIG fit setting: {detail}")


@dataclass(frozen=True)
class MigAssumptions:
    """The knobs of the demand estimate (settings), reported with every result."""

    percentile: float = 0.95
    compute_margin: float = COMPUTE_MARGIN
    """Safety margin on the compute percentile (VPA's default 15%), before scaling by confidence."""
    memory_margin: float = MEMORY_MARGIN
    half_life: timedelta = timedelta(hours=24)
    first_bucket: float = 0.001
    """Width of the first histogram bucket, as a fraction of the GPU."""
    bucket_ratio: float = 1.02
    """Each bucket is this much wider than the one before (VPA uses 1.05 for CPU)."""
    min_history: timedelta = MIN_HISTORY
    """History (confidence in days x 24 h) below which no profile is claimed: "not enough history (N h of M h)"."""

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
        if self.min_history < timedelta(0):
            raise InvalidMigAssumption(
                f"the history needed must be >= 0 hours (0 claims a profile from any history), got {self.min_history}"
            )
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

    @property
    def min_history_hours(self) -> float:
        return self.min_history.total_seconds() / 3600

    def enough_history(self, history_hours: float) -> bool:
        """Whether a history this long (``confidence x 24``, rounded to the minute) lets MIG fit claim a profile."""
        return round(history_hours * 60) >= round(self.min_history_hours * 60)

    def as_dict(self) -> dict[str, Any]:
        return {
            "percentile": self.percentile,
            "compute_margin": self.compute_margin,
            "memory_margin": self.memory_margin,
            "half_life_hours": self.half_life.total_seconds() / 3600,
            "min_history_hours": self.min_history_hours,
            "histogram": (
                f"exponential buckets (first {self.first_bucket} of a GPU, ratio {self.bucket_ratio}), minutes "
                "weighted 2^((t - t_last) / half-life); the percentile is the end of its bucket (VPA)"
            ),
            "confidence": (
                "min(history span in days, observed minutes / 1440) (VPA getConfidence); compute demand = "
                "min(percentile x (1 + (compute_margin - 1) x (1 + 1/confidence)), compute_held)"
            ),
            "compute_held": (
                "the share of a GPU one replica held (1.0 for a whole GPU, the instance's share on a MIG instance): "
                "a workload cannot be measured using more than it holds, so compute demand never exceeds it"
            ),
            "history": (
                "history_hours = confidence x 24; below min_history_hours the workload is 'not enough history' and "
                "no profile is claimed (no fit, no packing, no savings, no mig-parted layout)"
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
