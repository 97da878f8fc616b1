"""Benchmark 8: the minute rollup with shared-GPU splits against the rollup before them, on the same warehouse.

``rollup_partition_s``: seconds to compute one (date, cluster) of ``gpu_minutes`` and its daily summaries
(``warehouse.rollup.minutes_for_day`` plus every summary's ``summarize``, nothing written), the mean over the
warehouse's newest ``partitions`` partitions; the **baseline** is the very same work by the code at
``BASELINE_COMMIT`` (the last commit before shares, taken out of this clone's git history with ``git archive``), run
interleaved with it in the same run, each in a fresh process, best of ``repeats``. Target (issue 13): ratio <= 1.3.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from bench.common import Progress, Result, Target, clean_env

BASELINE_COMMIT = "b9cc207"
"""The rollup before shared-GPU splits (issue 12's last commit)."""
TARGET_RATIO = 1.3
REPO = Path(__file__).resolve().parent.parent

TIMED = """
import datetime as dt, json, sys, time
from pathlib import Path
from gpuledger.settings import Settings
from warehouse import rollup
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

lake, settings = Lake(Path(sys.argv[1])), Settings()
lifetimes = rollup.gpu_lifetimes(lake)
partitions = lake.partitions(GPU_SAMPLES)[-int(sys.argv[2]):]
started = time.perf_counter()
rows = 0
for partition in partitions:
    day = rollup.minutes_for_day(lake, partition, lifetimes, settings.state_rules, settings.rollup)
    start = dt.datetime.combine(partition.date, dt.time(), dt.UTC)
    for summary in settings.summaries.all():
        summary.summarize(day.lazy(), start, start + dt.timedelta(days=1))
    rows += day.height
print(json.dumps({"seconds": (time.perf_counter() - started) / len(partitions), "rows": rows}))
"""


def run(*, warehouse: Path, workdir: Path, progress: Progress, repeats: int = 3, partitions: int = 4) -> list[Result]:
    baseline = _baseline_tree(workdir, progress)
    if baseline is None:
        return []
    trees = {"shares": REPO, "baseline": baseline}
    best: dict[str, float] = {}
    rows: dict[str, int] = {}
    label = f"rollup of {partitions} partitions, with shares and at {BASELINE_COMMIT}, best of {repeats}"
    with progress.step(label) as update:
        for i in range(repeats):
            for name, tree in trees.items():
                measured = _timed(tree, warehouse, partitions)
                best[name] = min(best.get(name, float("inf")), measured["seconds"])
                rows[name] = int(measured["rows"])
                update(f"run {i + 1}/{repeats} {name}: {measured['seconds']:.2f} s per partition")
    if rows["shares"] != rows["baseline"]:
        progress.note(f"rollup: {rows['shares']:,} minute rows with shares, {rows['baseline']:,} at {BASELINE_COMMIT}")
    return [
        Result(
            "rollup_partition_s",
            best["shares"],
            "s",
            baseline=best["baseline"],
            target=Target("<=", TARGET_RATIO, on="ratio"),
            note=f"one (date, cluster) of gpu_minutes + its daily summaries; baseline: the rollup at {BASELINE_COMMIT}",
        )
    ]


def _baseline_tree(workdir: Path, progress: Progress) -> Path | None:
    """The sources at ``BASELINE_COMMIT``, unpacked under ``workdir``; None (said why) when this clone lacks it."""
    archive = workdir / "baseline.tar"
    made = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--output", str(archive), BASELINE_COMMIT],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        progress.note(f"rollup: skipped, commit {BASELINE_COMMIT} is not in this clone ({made.stderr.strip()})")
        return None
    tree = workdir / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def _timed(tree: Path, warehouse: Path, partitions: int) -> dict[str, float]:
    env = {**clean_env(), "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", TIMED, str(warehouse), str(partitions)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"rollup benchmark failed in {tree}:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
