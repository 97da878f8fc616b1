"""Benchmarks 2 and 3: ``gpuledger simulate`` end to end (simulate + ingest + rollup), then bytes on disk.

The command runs as a subprocess, exactly as a user runs it, so its wall time includes interpreter start and
imports and its peak RSS is its own (``wait4``). While it runs, progress counts the date partitions it has
written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from analysis.units import GIB
from bench.common import Progress, Result, check_ok, run_measured, simulate_command, tree_bytes
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES, TABLES

MINUTES_PER_DAY = 1440
ESTIMATED_BYTES_PER_SAMPLE = 60.0
"""Generous guess of the whole warehouse's bytes per GPU-sample, used only to check free disk space first."""


@dataclass(frozen=True)
class Simulated:
    warehouse: Path
    results: list[Result]


def estimated_bytes(gpus: int, days: int) -> float:
    return gpus * days * MINUTES_PER_DAY * ESTIMATED_BYTES_PER_SAMPLE


def _count_dirs(path: Path, prefix: str) -> int:
    try:
        return sum(1 for p in path.iterdir() if p.name.startswith(prefix))
    except OSError:
        return 0


def _count_parts(path: Path) -> int:
    return sum(1 for _ in path.rglob("part-*.parquet")) if path.is_dir() else 0


def simulate(*, gpus: int, days: int, seed: int, end: dt.datetime, workdir: Path, progress: Progress) -> Simulated:
    warehouse = workdir / "warehouse"
    args = simulate_command(warehouse, gpus=gpus, days=days, seed=seed, end=end)
    label = f"simulate: gpuledger simulate --gpus {gpus} --days {days}"
    with progress.step(label) as update:

        def poll(elapsed: float, rss: int) -> None:
            ingested = _count_dirs(warehouse / "gpu_samples", "date=")
            rolled = _count_parts(warehouse / "gpu_minutes")
            stage = f"rollup {rolled} partitions" if rolled else f"ingested {ingested}/{days} days"
            update(f"{stage}, RSS {rss / GIB:.2f} GiB")

        measured = run_measured(args, cwd=workdir, poll=poll)
    check_ok(measured, "gpuledger simulate")
    progress.note(f"simulate: {' '.join(measured.stderr.split())[-400:]}")

    lake = Lake(warehouse)
    sample_parts = lake.parts(GPU_SAMPLES)
    samples = sum(pq.ParquetFile(p).metadata.num_rows for p in sample_parts)
    sample_bytes = sum(p.stat().st_size for p in sample_parts)
    total_bytes = tree_bytes(warehouse)
    for table in TABLES.values():
        parts = lake.parts(table)
        size = sum(p.stat().st_size for p in parts)
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        progress.note(
            f"disk: {table.name:<16} {len(parts):>4} parts {rows:>13,} rows {size / 1e6:>9,.1f} MB"
            f"  ({size / samples if samples else 0:.2f} B per gpu_sample)"
        )
    if samples == 0:
        raise RuntimeError("gpuledger simulate left no gpu_samples rows")
    fleet = f"{gpus} GPUs x {days} days"
    results = [
        Result("simulate_ingest_wall_s", measured.wall_s, "s", note=f"{fleet}: simulate + ingest + rollup"),
        Result("simulate_ingest_peak_rss_gib", measured.peak_rss_gib, "GiB", note=f"{fleet}: peak RSS (wait4)"),
        Result("simulate_ingest_gpu_samples", float(samples), "rows", note=f"{fleet}: gpu_samples rows stored"),
        Result(
            "bytes_per_gpu_sample",
            sample_bytes / samples,
            "B/row",
            note=f"gpu_samples parts: {sample_bytes / 1e6:,.1f} MB",
        ),
        Result(
            "warehouse_bytes_per_gpu_sample",
            total_bytes / samples,
            "B/row",
            note=f"whole warehouse (allocations, nodes, gpu_minutes too): {total_bytes / 1e6:,.1f} MB",
        ),
    ]
    return Simulated(warehouse, results)
