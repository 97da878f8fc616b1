"""vCPUs and memory of GPU instance types (AWS and GCP), per instance and per GPU (shipped reference data).

A GPU-model move must land on an instance type that also fits the pod's CPU and memory. Source per row:
``analysis/data/gpu_instance_cpu_memory.csv`` (``source`` keys below) and ``analysis/data/SOURCES.md``. An instance
type not in the file has unknown CPU and memory; callers treat that as "cannot check", never as "fits".
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache

from analysis.instances import DATA

CPU_MEMORY_CSV = DATA / "gpu_instance_cpu_memory.csv"
SOURCES = {
    "aws-spot-advisor": "AWS Spot Instance Advisor feed instance_types (cores = vCPUs, ram_gb), 2025-06-28",
    "gcp-pricing": "Cyclenerd/google-cloud-pricing-cost-calculator pricing.yml (cpu, ram) @fd66b26f, 2026-07-30",
}


@dataclass(frozen=True)
class InstanceResources:
    instance_type: str
    vcpus: float
    memory_gib: float
    source: str

    def per_gpu(self, gpus: int) -> tuple[float, float]:
        """(vCPUs, memory GiB) per GPU of an instance with ``gpus`` GPUs."""
        return self.vcpus / gpus, self.memory_gib / gpus


@cache
def instance_resources() -> dict[str, InstanceResources]:
    with CPU_MEMORY_CSV.open() as handle:
        return {
            row["instance_type"]: InstanceResources(
                row["instance_type"], float(row["vcpus"]), float(row["memory_gib"]), SOURCES[row["source"]]
            )
            for row in csv.DictReader(handle)
        }


def resources_of(instance_type: str | None) -> InstanceResources | None:
    return instance_resources().get(instance_type) if instance_type else None
