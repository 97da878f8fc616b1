"""Benchmark 9 (issue 14): ``gpuledger recommend`` over the last 7 days of the benchmark fleet.

``recommend_wall_s`` and ``recommend_peak_rss_gib``: wall time (best of ``repeats``) and peak RSS (the largest of
any run, the command's own ``ru_maxrss`` from ``wait4``, see ``bench.common.run_measured``) of ``gpuledger
recommend --out DIR`` for the window ``[end - 7 days, end)``, each run a fresh process writing a fresh folder, as
a user runs it. Targets (issue 14): 10 s and 2 GiB on 2 cores, checked on the values, printed, never asserted.

The **baseline** is ``gpuledger report --format json`` for the very same window, run interleaved with it: the
recommendation job reads the report's own inputs (``reporting.report_inputs``: the priced minute groups, MIG fit,
spot) and then makes its own passes over the same ``gpu_minutes`` (per-device usage, held demand, idle streaks),
so the ratio is what recommendations cost on top of the report that reads the same minutes, and a slow or busy
machine slows both sides alike. The rollup and its daily summaries are brought up to date first, so neither side
pays for a refresh.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from analysis.units import GIB
from bench.common import Measured, Progress, Result, Target, check_ok, gpuledger_command, run_measured

WINDOW_DAYS = 7
TARGET_WALL_S = 10.0
TARGET_RSS_GIB = 2.0


def window_args(end: dt.datetime, days: int) -> list[str]:
    """``--start``/``--end`` of the last ``days`` (at most ``WINDOW_DAYS``) before ``end``."""
    start = end - dt.timedelta(days=min(days, WINDOW_DAYS))
    return ["--start", start.isoformat(), "--end", end.isoformat()]


def run(
    *, warehouse: Path, end: dt.datetime, days: int, workdir: Path, progress: Progress, repeats: int = 3
) -> list[Result]:
    window = window_args(end, days)
    with progress.step("recommend: gpuledger warehouse rollup (daily summaries current)"):
        measured = run_measured(
            [*gpuledger_command(), "warehouse", "rollup", "--warehouse", str(warehouse)], cwd=workdir
        )
    check_ok(measured, "gpuledger warehouse rollup")
    report = [*gpuledger_command(), "report", "--warehouse", str(warehouse), "--format", "json", *window]
    recommend = [*gpuledger_command(), "recommend", "--warehouse", str(warehouse), *window, "--out"]
    runs: dict[str, list[Measured]] = {"recommend": [], "report": []}
    label = f"recommend: gpuledger recommend and report, {' '.join(window)}, best of {repeats}"
    with progress.step(label) as update:
        for i in range(repeats):
            out = workdir / f"recommendations-{i}"
            commands = {"recommend": [*recommend, str(out)], "report": report}
            for name, args in commands.items():

                def poll(elapsed: float, rss: int, run: int = i + 1, name: str = name) -> None:
                    update(f"run {run}/{repeats} {name}: {elapsed:.0f} s so far, RSS {rss / GIB:.2f} GiB")

                measured = run_measured(args, cwd=workdir, poll=poll)
                check_ok(measured, f"gpuledger {name}")
                runs[name].append(measured)
                update(f"run {i + 1}/{repeats} {name}: {measured.wall_s:.2f} s, {measured.peak_rss_gib:.2f} GiB")
            json.loads(runs["report"][-1].stdout)  # the report must be a whole JSON document
            if not (out / "index.json").is_file():
                raise RuntimeError(f"gpuledger recommend wrote no index.json under {out}")
    for name, done in runs.items():
        progress.note(f"{name}: runs " + ", ".join(f"{m.wall_s:.2f} s / {m.peak_rss_gib:.2f} GiB" for m in done))
    wall = min(m.wall_s for m in runs["recommend"])
    peak = max(m.peak_rss_gib for m in runs["recommend"])
    for what, value, unit, target in (("wall", wall, "s", TARGET_WALL_S), ("peak RSS", peak, "GiB", TARGET_RSS_GIB)):
        verdict = "pass" if value <= target else "FAIL"
        progress.note(f"recommend {what}: {value:.2f} {unit} (target <= {target:g} {unit}): {verdict}")
    days_note = f"last {min(days, WINDOW_DAYS)} days"
    return [
        Result(
            "recommend_wall_s",
            wall,
            "s",
            baseline=min(m.wall_s for m in runs["report"]),
            target=Target("<=", TARGET_WALL_S),
            note=f"{days_note}; best of {repeats}; baseline: gpuledger report --format json, same window",
        ),
        Result(
            "recommend_peak_rss_gib",
            peak,
            "GiB",
            baseline=max(m.peak_rss_gib for m in runs["report"]),
            target=Target("<=", TARGET_RSS_GIB),
            note=f"{days_note}; max of {repeats}; baseline: the same report's peak RSS",
        ),
    ]
