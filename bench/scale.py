"""The scale curves (``python -m bench.run --scale``): the cost of simulate, rollup and report as the fleet grows,
and idle waste against PromQL on a real Prometheus as the history grows.

Each point runs the same benchmark as the default suite (``bench.fleet``, ``bench.rollup``, ``bench.report``,
``bench.promql``) on its own size; its results are renamed ``scale_<gpus>x<days>_<name>``, and a point's warehouse
is deleted before the next is built, so the disk holds one size at a time. A PromQL point that fails (Prometheus
refusing a query past its default limits, or not answering) ends that curve with a note saying where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from analysis.units import GIB
from bench import fleet, promql, report, rollup
from bench.common import Progress, Result, free_bytes

FLEET_SIZES: tuple[tuple[int, int], ...] = ((1024, 30), (2048, 30), (4096, 30))
"""(GPUs, days) of the simulate / rollup / report curve (issue 17)."""
PROMQL_SIZES: tuple[tuple[int, int], ...] = ((64, 7), (256, 7), (1024, 7), (1024, 30))
"""(GPUs, days) of the idle-waste-against-PromQL curve (issue 17)."""


def point_name(gpus: int, days: int, name: str) -> str:
    return f"scale_{gpus}x{days}_{name}"


def _renamed(results: Sequence[Result], gpus: int, days: int) -> list[Result]:
    return [
        dataclasses.replace(r, name=point_name(gpus, days, r.name), note=f"{gpus} GPUs x {days} days: {r.note}")
        for r in results
    ]


def fleet_curve(
    *,
    sizes: Sequence[tuple[int, int]] = FLEET_SIZES,
    seed: int,
    end: dt.datetime,
    workdir: Path,
    progress: Progress,
    repeats: int,
) -> list[Result]:
    """simulate (with ingest and rollup), one rollup partition against its baseline, and the report over the
    default window and the whole history, at every size; a command that fails ends the curve."""

    def measure(gpus: int, days: int) -> list[Result]:
        needed = fleet.estimated_bytes(gpus, days)
        if free_bytes(workdir) < needed:
            raise RuntimeError(f"about {needed / GIB:,.1f} GiB needed under {workdir} (pass --tmpdir on a larger disk)")
        here = workdir / f"fleet-{gpus}x{days}"
        here.mkdir()
        try:
            simulated = fleet.simulate(gpus=gpus, days=days, seed=seed, end=end, workdir=here, progress=progress)
            point = [*simulated.results]
            point += rollup.run(warehouse=simulated.warehouse, workdir=here, progress=progress, repeats=repeats)
            for suffix, window in report.WINDOWS.items():
                point += report.run_window(simulated.warehouse, here, progress, repeats, suffix, window)
            return point
        finally:
            shutil.rmtree(here, ignore_errors=True)

    return _curve("fleet", sizes, measure, progress, stops_on=RuntimeError)


def promql_curve(
    *,
    sizes: Sequence[tuple[int, int]] = PROMQL_SIZES,
    seed: int,
    end: dt.datetime,
    workdir: Path,
    progress: Progress,
    repeats: int,
) -> list[Result]:
    """``bench.promql`` at every size; any failure (Prometheus refusing a query, or not answering) ends the curve,
    and where it stopped is the finding."""

    def measure(gpus: int, days: int) -> list[Result]:
        return promql.run(gpus=gpus, days=days, seed=seed, end=end, workdir=workdir, progress=progress, repeats=repeats)

    return _curve("PromQL", sizes, measure, progress, stops_on=Exception)


def _curve(
    label: str,
    sizes: Sequence[tuple[int, int]],
    measure: Callable[[int, int], list[Result]],
    progress: Progress,
    *,
    stops_on: type[Exception],
) -> list[Result]:
    """``measure`` at every size in order, its results renamed per point, until one raises ``stops_on`` (noted, not
    raised) or measures nothing (it said why, such as no Prometheus installed); the points before it stay."""
    results: list[Result] = []
    for gpus, days in sizes:
        progress.note(f"scale: {label} curve, {gpus} GPUs x {days} days")
        try:
            point = measure(gpus, days)
        except stops_on as exc:
            progress.note(f"scale: the {label} curve stops at {gpus} GPUs x {days} days: {type(exc).__name__}: {exc}")
            break
        if not point:
            break
        results += _renamed(point, gpus, days)
    return results
