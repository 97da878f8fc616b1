"""Issue 16: how fast a ``gpuledger`` command answers, each a fresh process as a user starts it.

``cli_help_wall_s``: ``gpuledger --help``; ``cli_usage_error_wall_s``: the slowest of four usage errors (an unknown
command, an unknown option, a missing argument, a bad value), each the best of its runs; both against ``python -c
pass``, the interpreter's own start, measured in the same run. Target 0.5 s: parsing imports only Click
(``gpuledger.cli``).

``cli_report_demo_wall_s``: ``gpuledger report`` (Markdown, the default window) on the demo fleet, the fleet
``gpuledger demo`` simulates (``demo_gpus`` x ``demo_days`` from the settings), kept under ``bench/cache/`` like the
dashboard's; its rollup is brought up to date first, so no run pays for a refresh. The baseline is importing the
third-party libraries a report cannot do without (Polars, PyArrow's Parquet reader, pydantic-settings): the ratio is
what gpuledger's own modules and the report's work add to them. Target 1.5 s.

Every time is the best of its runs (runs interleaved with the baseline's, so a busy machine slows both alike), wall
clock from start to exit with ``subprocess.run``; printed and recorded, never asserted. The progress lines also give
each command's CPU time (user + system, from ``RUSAGE_CHILDREN``), which a busy machine inflates less than the wall.
"""

from __future__ import annotations

import datetime as dt
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Progress, Result, Target, clean_env, gpuledger_command
from bench.dashboard import cached_warehouse
from gpuledger.settings import Settings

TARGET_PARSE_S = 0.5
TARGET_REPORT_S = 1.5
SHORT_RUNS = 7
"""Runs of each short command (help, usage errors, their baseline): they take a fraction of a second."""
INTERPRETER = [sys.executable, "-c", "pass"]
REPORT_IMPORTS = [sys.executable, "-c", "import polars, pyarrow.parquet, pydantic_settings"]
USAGE_ERRORS = {
    "unknown command": ["frobnicate"],
    "unknown option": ["report", "--no-such-option"],
    "missing argument": ["query"],
    "bad value": ["simulate", "--gpus", "many"],
}
"""Each exits 2 with Click's usage message."""


def run(*, seed: int, end: dt.datetime, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    gpuledger = gpuledger_command()
    runs = max(repeats, SHORT_RUNS)
    results = [_help(gpuledger, workdir, progress, runs), _usage_errors(gpuledger, workdir, progress, runs)]
    fields = Settings.model_fields
    gpus, days = fields["demo_gpus"].default, fields["demo_days"].default
    warehouse = cached_warehouse(gpus=gpus, days=days, seed=seed, end=end, progress=progress)
    results.append(_report(gpuledger, warehouse, f"{gpus} GPUs x {days} days", workdir, progress, repeats))
    return results


@dataclass
class Runs:
    """One command's runs: wall and CPU seconds of each."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.walls)

    def describe(self, name: str) -> str:
        return f"{name} best {self.best:.3f} s wall, {min(self.cpus):.3f} s CPU"


def _help(gpuledger: list[str], workdir: Path, progress: Progress, runs: int) -> Result:
    with progress.step(f"cli: gpuledger --help against python -c pass, best of {runs}"):
        done = _interleaved({"help": [*gpuledger, "--help"], "python": INTERPRETER}, workdir, runs, expect=0)
    _note(progress, done)
    return Result(
        "cli_help_wall_s",
        done["help"].best,
        "s",
        baseline=done["python"].best,
        target=Target("<=", TARGET_PARSE_S),
        note=f"best of {runs}; baseline: python -c pass",
    )


def _usage_errors(gpuledger: list[str], workdir: Path, progress: Progress, runs: int) -> Result:
    commands = {kind: [*gpuledger, *args] for kind, args in USAGE_ERRORS.items()}
    with progress.step(f"cli: {len(commands)} usage errors against python -c pass, best of {runs}"):
        done = _interleaved({**commands, "python": INTERPRETER}, workdir, runs, expect=2, baseline="python")
    _note(progress, done)
    slowest = max(commands, key=lambda kind: done[kind].best)
    return Result(
        "cli_usage_error_wall_s",
        done[slowest].best,
        "s",
        baseline=done["python"].best,
        target=Target("<=", TARGET_PARSE_S),
        note=f"slowest of {len(commands)} usage errors ({slowest}), best of {runs} each; baseline: python -c pass",
    )


def _report(
    gpuledger: list[str], warehouse: Path, fleet: str, workdir: Path, progress: Progress, repeats: int
) -> Result:
    with progress.step("cli: gpuledger warehouse rollup on the demo fleet (daily summaries current)"):
        _timed([*gpuledger, "warehouse", "rollup", "--warehouse", str(warehouse)], workdir, expect=0, into=Runs())
    report = [*gpuledger, "report", "--warehouse", str(warehouse)]
    with progress.step(f"cli: gpuledger report on the demo fleet ({fleet}), best of {repeats}"):
        done = _interleaved({"report": report, "imports": REPORT_IMPORTS}, workdir, repeats, expect=0)
    _note(progress, done)
    return Result(
        "cli_report_demo_wall_s",
        done["report"].best,
        "s",
        baseline=done["imports"].best,
        target=Target("<=", TARGET_REPORT_S),
        note=f"demo fleet, {fleet}; best of {repeats}; baseline: importing polars, pyarrow.parquet, pydantic_settings",
    )


def _note(progress: Progress, done: dict[str, Runs]) -> None:
    progress.note("cli: " + "; ".join(runs.describe(name) for name, runs in done.items()))


def _interleaved(
    commands: dict[str, list[str]], workdir: Path, runs: int, *, expect: int, baseline: str | None = None
) -> dict[str, Runs]:
    """Each command run in turn, ``runs`` times; ``baseline`` (the one name exiting 0) is exempt from ``expect``."""
    done = {name: Runs() for name in commands}
    for _ in range(runs):
        for name, args in commands.items():
            _timed(args, workdir, expect=0 if name == baseline else expect, into=done[name])
    return done


def _timed(args: Sequence[str], workdir: Path, *, expect: int, into: Runs) -> None:
    """One run of ``args``: its wall and CPU seconds go into ``into``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(args, cwd=workdir, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True)
    into.walls.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    into.cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    if done.returncode != expect:
        tail = "\n".join(done.stderr.decode(errors="replace").strip().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(args)} exited with {done.returncode}, not {expect}:\n{tail}")
