"""Benchmark 11: the minute rollup on a Dask cluster with one and with two workers, against the rollup in one process.

The fleet is simulated fresh (``gpuledger simulate``, ``gpus`` x ``days``) under the run's temporary directory.
Every timed run is ``gpuledger warehouse rollup`` (a fresh process) with a different ``active_threshold_pct``, so
every (date, cluster) of ``gpu_minutes`` and its daily summaries is recomputed each time: in the process itself (the
**baseline**), then with ``--scheduler`` on a local Dask cluster started here (``distributed.LocalCluster``: a scheduler
and one or two single-threaded worker processes on loopback), interleaved, best of ``repeats``. The workers share this
machine's cores with each other and with Polars' own threads, so on a 2-core machine the speed-up is what two
processes add over one process that already uses both cores; on separate machines each worker brings its own.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import Progress, Result, clean_env, gpuledger_command, simulate_command


def run(
    *, gpus: int, days: int, seed: int, end: dt.datetime, workdir: Path, progress: Progress, repeats: int = 3
) -> list[Result]:
    warehouse = workdir / "distributed" / "wh"
    with progress.step(f"distributed rollup: simulating {gpus} GPUs x {days} days"):
        subprocess.run(
            simulate_command(warehouse, gpus=gpus, days=days, seed=seed, end=end),
            env=clean_env(),
            check=True,
            capture_output=True,
        )
    best = {"one process": float("inf"), "1 worker": float("inf"), "2 workers": float("inf")}
    threshold = iter(range(1, 1000))
    label = f"distributed rollup of {gpus} GPUs x {days} days: in one process, on 1 and 2 Dask workers"
    with progress.step(label + f", best of {repeats}") as update:
        for i in range(repeats):
            best["one process"] = min(best["one process"], _rollup(warehouse, next(threshold), None))
            for workers in (1, 2):
                name = f"{workers} worker" + ("s" if workers > 1 else "")
                with _cluster(workers) as address:
                    best[name] = min(best[name], _rollup(warehouse, next(threshold), address))
            update(f"run {i + 1}/{repeats}: " + ", ".join(f"{k} {v:.1f} s" for k, v in best.items()))
    size = f"{gpus} GPUs x {days} days, every partition recomputed"
    return [
        Result(
            "distributed_rollup_1_worker_s",
            best["1 worker"],
            "s",
            baseline=best["one process"],
            note=f"{size}; baseline: the rollup in one process (Polars' threads on every core)",
        ),
        Result(
            "distributed_rollup_2_workers_s",
            best["2 workers"],
            "s",
            baseline=best["1 worker"],
            note=f"{size}; baseline: the same on 1 worker (ratio: 1 / the speed-up)",
        ),
    ]


def _rollup(warehouse: Path, threshold_step: int, scheduler: str | None) -> float:
    """Seconds of one `gpuledger warehouse rollup` that recomputes every partition (a threshold not used before)."""
    env = {**clean_env(), "GPULEDGER_ACTIVE_THRESHOLD_PCT": f"{5 + threshold_step * 0.01:.2f}"}
    args = [*gpuledger_command(), "warehouse", "rollup", "--warehouse", str(warehouse)]
    args += ["--scheduler", scheduler] if scheduler else []
    started = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or " 0 partitions computed" in done.stdout:
        raise SystemExit(f"distributed rollup bench: {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return seconds


@contextmanager
def _cluster(workers: int) -> Iterator[str]:
    """Dask's own local cluster: a scheduler and ``workers`` single-threaded worker processes on loopback."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield str(cluster.scheduler_address)
