"""NVIDIA GPU instance types: GPU model, count and memory per instance type (shipped reference data).

Source and date: ``analysis/data/SOURCES.md``. The price catalog and the simulator both read instance facts here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data"
INSTANCE_TYPES_CSV = DATA / "aws_nvidia_gpu_instance_types.csv"
INSTANCE_TYPES_SOURCE = "aws/karpenter-provider-aws zz_generated.pricing_aws.go @1d927085 (us-east-1, 2026-07-20)"


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu_model: str
    gpu_count: int
    gpu_memory_gib: int
    on_demand_usd_per_hour: float | None

    @property
    def family(self) -> str:
        return self.name.split(".")[0]


@cache
def instance_types() -> dict[str, InstanceType]:
    with INSTANCE_TYPES_CSV.open() as handle:
        return {
            row["instance_type"]: InstanceType(
                name=row["instance_type"],
                gpu_model=row["gpu_model"],
                gpu_count=int(row["gpu_count"]),
                gpu_memory_gib=int(row["gpu_memory_gib"]),
                on_demand_usd_per_hour=float(row["on_demand_usd_per_hour_us_east_1"])
                if row["on_demand_usd_per_hour_us_east_1"]
                else None,
            )
            for row in csv.DictReader(handle)
        }
