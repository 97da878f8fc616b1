"""The demo fleet with its recommendations written, built once per test session (``conftest.demo``): the
recommendation tests of several modules read it, and building it takes about 20 s."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from analysis import recommend
from gpuledger import recommending
from gpuledger.cli import main
from gpuledger.settings import load_settings
from warehouse.lake import Lake


@dataclass(frozen=True)
class Demo:
    """The demo fleet after `gpuledger recommend` wrote its files, and the same window through the Python API (the
    dashboard's read-only call, a day later on the clock) with the warehouse's files before and after that call."""

    root: Path
    out: Path
    cli: Result
    recs: recommend.RecommendationSet
    files_before: list[tuple[Path, int]]
    files_after: list[tuple[Path, int]]


def files_of(root: Path) -> list[tuple[Path, int]]:
    return sorted((q, q.stat().st_mtime_ns) for q in root.rglob("*") if q.is_file())


def build_demo(base: Path) -> Demo:
    root, out = base / "wh", base / "recs"
    runner = CliRunner()
    simulated = runner.invoke(main, ["simulate", "--warehouse", str(root), "--end", "2026-11-27"])
    assert simulated.exit_code == 0, simulated.output
    cli = runner.invoke(main, ["recommend", "--warehouse", str(root), "--out", str(out)], catch_exceptions=False)
    before = files_of(root)
    later = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    recs = recommending.recommendations(Lake(root), load_settings(None), start=None, end=None, now=later, refresh=False)
    return Demo(root, out, cli, recs, before, files_of(root))
