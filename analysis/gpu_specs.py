"""What each GPU model supports (BF16, FP8, TF32 Tensor Cores) and its dense Tensor Core TFLOPS per precision (NVIDIA
datasheets and architecture whitepapers), and Karpenter's GPU name label value.

Used to judge whether a workload's measured compute fits a cheaper GPU model: a workload that keeps a fraction ``u``
of an A100 (312 BF16 TFLOPS) busy needs ``u x 312`` TFLOPS of the same precision wherever it runs, and a model that
lacks the precision cannot run it at all. Peak tensor throughput is a proxy: memory bandwidth and interconnect differ
between models and are not modelled (every recommendation that uses these numbers says so). A precision a model does
not support has no TFLOPS figure (a T4 has no BF16; its FP16 figure is only ``dense_fp16_tflops``). Sources per row:
``analysis/data/gpu_compute.csv`` (``tflops_source``, ``support_source``) and ``analysis/data/SOURCES.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache

from analysis.gpu_names import gpu_model_key
from analysis.instances import DATA

GPU_COMPUTE_CSV = DATA / "gpu_compute.csv"
PRECISIONS = ("bf16", "fp8", "tf32")
"""The Tensor Core formats the catalog states support for; FP16 every catalogued model runs."""
FP16 = "fp16"


class GpuCatalogError(ValueError):
    """The shipped GPU catalog contradicts itself (a supported precision with no TFLOPS, or the reverse)."""

    def __init__(self, model: str, precision: str, problem: str) -> None:
        super().__init__(
            f"{GPU_COMPUTE_CSV.name}: {model}: {precision} {problem}; "
            f"give dense TFLOPS exactly where {precision} is true"
        )


@dataclass(frozen=True)
class GpuSpec:
    gpu_model: str
    karpenter_gpu_name: str
    dense_fp16_tflops: float
    supported_tflops: tuple[tuple[str, float], ...]
    """(precision, dense TFLOPS) for each of ``PRECISIONS`` the model supports."""
    tflops_source: str
    support_source: str

    def supports(self, precision: str) -> bool:
        return precision == FP16 or any(p == precision for p, _ in self.supported_tflops)

    def dense_tflops(self, precision: str) -> float | None:
        """Dense Tensor Core TFLOPS at ``precision`` (``bf16``, ``fp8``, ``tf32``, ``fp16``); None where unsupported."""
        if precision == FP16:
            return self.dense_fp16_tflops
        return dict(self.supported_tflops).get(precision)

    @property
    def source(self) -> str:
        return f"{self.tflops_source}; {self.support_source}"


def _flag(model: str, precision: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise GpuCatalogError(model, precision, f"support is {text!r}, not true or false")
    return text == "true"


def _spec(row: dict[str, str]) -> GpuSpec:
    model = row["gpu_model"]
    supported = []
    for p in PRECISIONS:
        figure = row[f"dense_{p}_tflops"]
        if _flag(model, p, row[p]) != bool(figure):
            raise GpuCatalogError(model, p, "support and TFLOPS disagree")
        if figure:
            supported.append((p, float(figure)))
    return GpuSpec(
        gpu_model=model,
        karpenter_gpu_name=row["karpenter_gpu_name"],
        dense_fp16_tflops=float(row["dense_fp16_tflops"]),
        supported_tflops=tuple(supported),
        tflops_source=row["tflops_source"],
        support_source=row["support_source"],
    )


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """By normalised model key (``analysis.gpu_names.gpu_model_key``)."""
    with GPU_COMPUTE_CSV.open() as handle:
        return {gpu_model_key(row["gpu_model"]): _spec(row) for row in csv.DictReader(handle)}


def gpu_spec(gpu_model: str | None) -> GpuSpec | None:
    if not gpu_model:
        return None
    return gpu_specs().get(gpu_model_key(gpu_model))


def assumed_precision(spec: GpuSpec) -> str:
    """The precision a workload of unknown precision is taken to need: BF16 where its current GPU has BF16 (it may
    use it, and a GPU without it cannot run that code at full speed or at all), else FP16."""
    return "bf16" if spec.supports("bf16") else FP16
