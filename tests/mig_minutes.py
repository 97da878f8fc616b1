"""Minute frames for the MIG tests, built with the warehouse's own `gpu_minutes` schema, and the hand computations
they are checked against."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa
from hypothesis import strategies as st

from analysis.mig.assumptions import MigAssumptions
from analysis.mig.catalog import load_catalog
from analysis.mig.savings import MigFit, mig_fit
from analysis.units import GIB
from warehouse.schema import GPU_MINUTES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
WEEK = 7 * 1440
H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
P5_GPU_HOUR = 55.04 / 8  # p5.48xlarge us-east-1 on-demand / 8 GPUs (analysis/data/aws_nvidia_gpu_instance_types.csv)

CATALOG = load_catalog()


def minutes(
    workload: str,
    model: str | None,
    n: int,
    util: Callable[[int], float | None],
    mem_gib: float | None,
    *,
    uuid: str | None = None,
    namespace: str = "ml",
    start: dt.datetime = T0,
    offsets: list[int] | None = None,
    **extra: Any,
) -> list[dict[str, Any]]:
    """``n`` consecutive held minutes (or the given minute ``offsets``) of one workload on one GPU."""
    steps = offsets if offsets is not None else list(range(n))
    return [
        {
            "ts": start + dt.timedelta(minutes=i),
            "cluster": "c1",
            "node": "node-1",
            "gpu_uuid": uuid or f"GPU-{workload}",
            "gpu_model": model,
            "samples": 6,
            "sm_active_mean": util(i),
            "fb_used_max_bytes": None if mem_gib is None else int(mem_gib * GIB),
            "fb_total_bytes": 80 * GIB,
            "namespace": namespace,
            "pod": f"{workload}-0",
            "workload": workload,
            "holders": 1,
            "state": "active",
            "source": "simulator",
            **extra,
        }
        for i in steps
    ]


def frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    return pl.DataFrame(pa.Table.from_pylist(rows, schema=GPU_MINUTES.schema)).lazy()


def bucket_end(u: float, first: float = 0.001, ratio: float = 1.02) -> float:
    """Hand computation of VPA's percentile answer: the end of the exponential bucket holding ``u``."""
    i = math.floor(math.log(u * (ratio - 1) / first + 1, ratio))
    return first * (ratio ** (i + 1) - 1) / (ratio - 1)


def margin(days: float, compute_margin: float = 1.15) -> float:
    return 1 + (compute_margin - 1) * (1 + 1 / days)


def one(result: MigFit, workload: str) -> dict[str, Any]:
    rows = result.workloads.filter(pl.col("workload") == workload).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def assert_no_nan(result: MigFit) -> None:
    for df in (result.workloads, result.by_model):
        for name, dtype in df.schema.items():
            if dtype.is_float():
                assert not df[name].is_nan().any(), f"NaN in {name}"
    assert not math.isnan(result.savings_usd_month)


def fit_all(rows: list[dict[str, Any]], **assumptions: Any) -> MigFit:
    return mig_fit(
        frame(rows),
        prices={H100: P5_GPU_HOUR, H200: 10.0},
        price_sources={H100: "p5.48xlarge us-east-1 on-demand / 8", H200: "test price"},
        assumptions=MigAssumptions(**assumptions),
    )


utilizations = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=30)
