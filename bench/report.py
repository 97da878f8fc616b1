"""Benchmark 4: ``gpuledger report --format json`` on the simulated warehouse (its rollup already fresh).

Time is the best of ``repeats`` runs; memory is the largest peak RSS of any run. Each run is a fresh process,
so the time includes interpreter start and imports, as a user sees it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import GIB, Progress, Result, Target, check_ok, gpuledger_command, run_measured

TARGET_WALL_S = 10.0
TARGET_RSS_GIB = 4.0


WINDOWS = {
    "": [],  # the default window: report_days (7) ending at the newest sample
    "_full_history": ["--start", "2000-01-01"],  # every stored day
}


def run(*, warehouse: Path, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    results: list[Result] = []
    for suffix, window in WINDOWS.items():
        results += _run_window(warehouse, workdir, progress, repeats, suffix, window)
    return results


def _run_window(
    warehouse: Path, workdir: Path, progress: Progress, repeats: int, suffix: str, window: list[str]
) -> list[Result]:
    args = [*gpuledger_command(), "report", "--warehouse", str(warehouse), "--format", "json", *window]
    label = "default window" if not window else "whole history"
    walls: list[float] = []
    peaks: list[float] = []
    with progress.step(f"report ({label}): gpuledger report --format json, best of {repeats}") as update:
        for i in range(repeats):

            def poll(elapsed: float, rss: int, run: int = i + 1) -> None:
                update(f"run {run}/{repeats}: {elapsed:.0f} s so far, RSS {rss / GIB:.2f} GiB")

            measured = run_measured(args, cwd=workdir, poll=poll)
            check_ok(measured, "gpuledger report")
            json.loads(measured.stdout)  # the output must be a whole JSON document
            walls.append(measured.wall_s)
            peaks.append(measured.peak_rss_gib)
            update(f"run {i + 1}/{repeats}: {measured.wall_s:.2f} s, {measured.peak_rss_gib:.2f} GiB")
    progress.note(
        f"report ({label}): runs " + ", ".join(f"{w:.2f} s / {p:.2f} GiB" for w, p in zip(walls, peaks, strict=True))
    )
    return [
        Result(
            f"report{suffix}_wall_s",
            min(walls),
            "s",
            target=Target("<=", TARGET_WALL_S),
            note=f"{label}; best of {repeats}",
        ),
        Result(
            f"report{suffix}_peak_rss_gib",
            max(peaks),
            "GiB",
            target=Target("<=", TARGET_RSS_GIB),
            note=f"{label}; max of {repeats}",
        ),
    ]
