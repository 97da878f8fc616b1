"""Benchmark 4: ``gpuledger report --format json`` on the simulated warehouse (its rollup already fresh).

Time is the best of ``repeats`` runs; memory is the largest peak RSS of any run. Each run is a fresh process,
so the time includes interpreter start and imports, as a user sees it.

``report_checksums_wall_s`` prices the page-CRC checks every read makes (``warehouse.lake.scan_parts``): the
whole-history report as shipped against the same report with ``warehouse.lake.VERIFY_CHECKSUMS`` off (Polars'
own Parquet reader, which checks no CRC), runs interleaved, best of ``repeats`` each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from analysis.units import GIB
from bench.common import Progress, Result, Target, check_ok, gpuledger_command, run_measured

TARGET_WALL_S = 10.0
TARGET_RSS_GIB = 4.0
TARGET_CHECKSUM_RATIO = 1.25
UNVERIFIED = (
    "import sys; import warehouse.lake; warehouse.lake.VERIFY_CHECKSUMS = False; "
    "from gpuledger.cli import main; sys.argv[0] = 'gpuledger'; main()"
)
"""``gpuledger`` with the page-CRC checks off: the baseline of ``report_checksums_wall_s``."""


WINDOWS = {
    "": [],  # the default window: report_days (7) ending at the newest sample
    "_full_history": ["--start", "2000-01-01"],  # every stored day
}


def run(*, warehouse: Path, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    results: list[Result] = []
    for suffix, window in WINDOWS.items():
        results += run_window(warehouse, workdir, progress, repeats, suffix, window)
    results.append(checksums(warehouse=warehouse, workdir=workdir, progress=progress, repeats=repeats))
    return results


def checksums(*, warehouse: Path, workdir: Path, progress: Progress, repeats: int = 3) -> Result:
    """The whole-history report with page-CRC checks (as shipped) against the same report without them."""
    report = ["report", "--warehouse", str(warehouse), "--format", "json", *WINDOWS["_full_history"]]
    commands = {"verified": [*gpuledger_command(), *report], "unverified": [sys.executable, "-c", UNVERIFIED, *report]}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    with progress.step(f"report with and without page-CRC checks, best of {repeats}") as update:
        for i in range(repeats):
            for name, args in commands.items():
                measured = run_measured(args, cwd=workdir)
                check_ok(measured, f"gpuledger report ({name})")
                walls[name].append(measured.wall_s)
                outputs[name] = measured.stdout
                update(f"run {i + 1}/{repeats} {name}: {measured.wall_s:.2f} s")
    if json.loads(outputs["verified"]) != json.loads(outputs["unverified"]):
        raise SystemExit("the report differs with and without page-CRC checks")
    progress.note(
        "report with / without CRC checks: "
        + "; ".join(f"{k} " + ", ".join(f"{w:.2f}" for w in v) for k, v in walls.items())
    )
    return Result(
        "report_checksums_wall_s",
        min(walls["verified"]),
        "s",
        baseline=min(walls["unverified"]),
        target=Target("<=", TARGET_CHECKSUM_RATIO, on="ratio"),
        note="whole history; baseline: the same report without page-CRC checks",
    )


def run_window(
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
