"""GPU compute per model (dense BF16 Tensor TFLOPS from NVIDIA datasheets) and Karpenter's GPU name label value.

Used to judge whether a workload's measured compute fits a cheaper GPU model: a workload that keeps a fraction ``u``
of an A100 (312 TFLOPS) busy needs ``u x 312`` TFLOPS wherever it runs. Peak tensor throughput is a proxy: memory
bandwidth, interconnect and FP8 support differ between models and are not modelled (every recommendation that uses
these numbers says so). Sources per row: ``analysis/data/gpu_compute.csv`` and ``analysis/data/SOURCES.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache

from analysis.gpu_names import gpu_model_key
from analysis.instances import DATA

GPU_COMPUTE_CSV = DATA / "gpu_compute.csv"


@dataclass(frozen=True)
class GpuSpec:
    gpu_model: str
    dense_bf16_tflops: float
    karpenter_gpu_name: str
    source: str


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """By normalised model key (``analysis.gpu_names.gpu_model_key``)."""
    with GPU_COMPUTE_CSV.open() as handle:
        return {
            gpu_model_key(row["gpu_model"]): GpuSpec(
                row["gpu_model"], float(row["dense_bf16_tflops"]), row["karpenter_gpu_name"], row["source"]
            )
            for row in csv.DictReader(handle)
        }


def gpu_spec(gpu_model: str | None) -> GpuSpec | None:
    if not gpu_model:
        return None
    return gpu_specs().get(gpu_model_key(gpu_model))
