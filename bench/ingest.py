"""Benchmark 1: rows/s of ``warehouse.ingest.append`` for one simulated day against a bare Parquet write.

Both sides get the same Arrow table (one day of ``gpu_samples`` from ``FleetTelemetry``, built once, not
timed) and write with the project's compression. ``append`` also validates, deduplicates, splits by (date,
cluster), sorts, fsyncs and commits through the journal: the ratio says what that costs. Each side takes the
best of ``repeats`` runs, interleaved so that a busy neighbour hurts both alike; each ``append`` repeat gets a
fresh warehouse.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import io
import pstats
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import Progress, Result, Target
from collector.fleet import plan
from collector.simulate import FleetTelemetry
from warehouse.ingest import append
from warehouse.lake import COMPRESSION, Lake
from warehouse.schema import GPU_SAMPLES

TARGET_RATIO = 0.5


def one_day(gpus: int, seed: int, end: dt.datetime) -> pa.Table:
    """One real simulated day of ``gpu_samples`` for ``gpus`` GPUs (60 s samples)."""
    return FleetTelemetry(plan(gpus, 1, seed, end)).day(0).samples


def _time_append(root: Path, data: pa.Table) -> float:
    lake = Lake(root, create=True)
    started = time.perf_counter()
    result = append(lake, GPU_SAMPLES, data)
    elapsed = time.perf_counter() - started
    if result.rows_written != data.num_rows:
        raise RuntimeError(f"append wrote {result.rows_written} of {data.num_rows} rows into a fresh warehouse")
    return elapsed


def _time_bare(path: Path, data: pa.Table) -> float:
    started = time.perf_counter()
    pq.write_table(data, path, compression=COMPRESSION)
    return time.perf_counter() - started


def run(*, gpus: int, seed: int, end: dt.datetime, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    with progress.step(f"ingest: simulating one day of {gpus} GPUs"):
        data = one_day(gpus, seed, end)
    rows = data.num_rows
    progress.note(f"ingest: {rows:,} gpu_samples rows, {data.nbytes / 1e6:,.0f} MB in Arrow")
    ours: list[float] = []
    bare: list[float] = []
    with progress.step(f"ingest: append vs bare write_table, best of {repeats}") as update:
        for i in range(repeats):
            with tempfile.TemporaryDirectory(dir=workdir, prefix="bare-") as tmp:
                bare.append(_time_bare(Path(tmp) / "samples.parquet", data))
            with tempfile.TemporaryDirectory(dir=workdir, prefix="append-") as tmp:
                ours.append(_time_append(Path(tmp) / "wh", data))
            update(f"repeat {i + 1}/{repeats}: append {ours[-1]:.2f} s, bare {bare[-1]:.2f} s")
    progress.note(
        "ingest: append runs "
        + ", ".join(f"{t:.2f}" for t in ours)
        + " s; bare runs "
        + ", ".join(f"{t:.2f}" for t in bare)
        + " s"
    )
    return [
        Result(
            "ingest_rows_per_s",
            rows / min(ours),
            "rows/s",
            baseline=rows / min(bare),
            target=Target(">=", TARGET_RATIO, on="ratio"),
            note=f"{rows:,} rows; baseline: bare pq.write_table ({COMPRESSION})",
        )
    ]


def profile_append(*, gpus: int, seed: int, end: dt.datetime, workdir: Path, top: int = 20) -> str:
    """A cProfile of one ``append`` into a fresh warehouse, the ``top`` entries by cumulative time."""
    data = one_day(gpus, seed, end)
    _time_append(workdir / "warmup-wh", data)
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(dir=workdir, prefix="profile-") as tmp:
        lake = Lake(Path(tmp) / "wh", create=True)
        profiler.enable()
        append(lake, GPU_SAMPLES, data)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()
