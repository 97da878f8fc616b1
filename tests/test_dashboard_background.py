"""The dashboard server's reads before it serves (``server.warm_default``) and in the background, in a worker
process at the lowest CPU priority (``worker``, ``background``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from analysis.filters import Filters
from analysis.window import Window
from dashboards import background, data, server, worker
from dashboards.source import FleetView
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from warehouse.lake import Lake


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie (exited, not yet reaped by its parent) is gone too
            if stat.read().split(") ", 1)[1].startswith("Z"):
                return True
        time.sleep(0.05)
    return False


def test_a_worker_call_returns_its_result_or_raises_its_error() -> None:
    with worker.started() as child:
        assert child.call(sum, [1, 2, 3]) == 6
        with pytest.raises(ValueError, match="invalid literal"):
            child.call(int, "not a number")
        with pytest.raises(RuntimeError, match="cannot be pickled"):
            child.call(threading.Lock)
        assert child.call(sum, [4]) == 4, "the worker outlives a call that failed"


@pytest.mark.skipif(not hasattr(os, "nice"), reason="no process priorities (os.nice) on this platform")
def test_the_worker_runs_at_the_lowest_priority_and_ends_with_the_block() -> None:
    with worker.started() as child:
        assert child.call(os.nice, 0) == worker.NICE
        pid = child.call(os.getpid)
        assert pid != os.getpid()
    assert gone(pid), "the worker outlived its block"


def test_the_worker_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from dashboards import worker\n"
            "with worker.started() as child:\n"
            "    print(child.call(os.getpid), flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    assert gone(pid), "the worker outlived a parent killed mid-call"


@pytest.fixture
def source(settings: Settings) -> Viewing:
    return Viewing(settings)


def default_window(lake: Lake, source: Viewing) -> Window:
    return source.window_of(None, None, source.history(lake).newest_minute)


def test_reads_in_the_worker_equal_the_same_reads_here(sim_warehouse: Path, source: Viewing) -> None:
    lake = Lake(sim_warehouse)
    window = default_window(lake, source)
    with worker.started() as child:
        slow = background.InBackground(source, child)
        there = slow.full_inputs(lake, window)
        here = source.full_inputs(lake, window)
        assert_frame_equal(there.groups, here.groups)
        assert there.mig_fit == here.mig_fit and there.spot == here.spot
        assert_frame_equal(slow.sample_sources(lake, window), source.sample_sources(lake, window))
        version = lake.version()
        assert slow.recommendations(lake, window, version) == source.recommendations(lake, window, version)


@dataclass(frozen=True)
class Counted(Viewing):
    """Viewing that counts its fleet-view reads."""

    reads: list[Window] = field(default_factory=list, compare=False, hash=False)

    def fleet_view(self, lake: Lake, window: Window) -> FleetView:
        self.reads.append(window)
        return super().fleet_view(lake, window)


def test_the_default_window_is_read_before_serving(sim_warehouse: Path, settings: Settings) -> None:
    # a settings key no other test uses, so this test's reads are not another's cache entries
    source = Counted(settings.model_copy(update={"report_top_n": settings.report_top_n + 7}))
    server.warm_default(sim_warehouse, source)
    assert len(source.reads) == 1
    root, version = str(sim_warehouse.resolve()), Lake(sim_warehouse).version()
    hist = data.history(root, version, source.key, source)
    window = source.window_of(None, None, hist.newest_minute)
    view = data.fleet_view(root, version, window.start.isoformat(), window.end.isoformat(), source.key, source)
    assert len(source.reads) == 1, "the app's first read of the default window was not the one made before serving"
    page = data.page(sim_warehouse.resolve(), version, source, hist, view, Filters())
    assert page.report["fleet"]["cost_usd"] > 0
    assert isinstance(page.buckets, pl.DataFrame) and page.buckets.height > 0


def test_a_warehouse_that_cannot_be_read_is_left_to_the_page(tmp_path: Path, source: Viewing) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    server.warm_default(empty, source)  # no exception: the app shows its help page
