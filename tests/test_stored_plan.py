"""The default window's recommendations stored with the warehouse for the dashboard (``gpuledger.stored_plan``):
written by ``simulate`` and ``warehouse rollup``, used only for exactly the data, window and settings it was ranked
for, and never a reason to fail."""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from analysis.recommend.listing import listing
from analysis.window import Window
from gpuledger import reporting, stored_plan, viewing
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from warehouse.lake import STATE_DIR, Lake
from warehouse.schema import utc_now


@pytest.fixture
def copied(sim_warehouse: Path, tmp_path: Path) -> Lake:
    """The session's simulated fleet, copied: these tests write its state."""
    root = tmp_path / "copy"
    shutil.copytree(sim_warehouse, root)
    return Lake(root)


def state_file(lake: Lake) -> Path:
    return lake.root / STATE_DIR / f"{stored_plan.STATE}.json"


def default_window(lake: Lake, settings: Settings) -> Window:
    return viewing.window_of(settings, None, None, reporting.newest_minute(lake))


def test_simulate_stores_the_listing_the_dashboard_would_rank(copied: Lake, settings: Settings) -> None:
    window = default_window(copied, settings)
    stored = stored_plan.load(copied, settings, window, copied.version())
    assert stored is not None, "gpuledger simulate stored no listing"
    ranked = listing(viewing.recommendations(copied, settings, window))
    assert ranked["items"], "the simulated fleet has recommendations to compare"
    assert stored == ranked
    assert Viewing(settings).recommendations(copied, window, copied.version()) == ranked


def test_a_listing_for_other_data_window_or_settings_is_not_used(copied: Lake, settings: Settings) -> None:
    window = default_window(copied, settings)
    version = copied.version()
    assert stored_plan.load(copied, settings, window, version) is not None
    assert stored_plan.load(copied, settings, window, "another-version") is None
    shorter = Window(window.start + dt.timedelta(days=1), window.end)
    assert stored_plan.load(copied, settings, shorter, version) is None
    other = settings.model_copy(update={"report_top_n": settings.report_top_n + 1})
    assert stored_plan.load(copied, other, window, version) is None


def test_a_torn_listing_reads_as_absent_and_the_page_ranks_its_own(copied: Lake, settings: Settings) -> None:
    window = default_window(copied, settings)
    expected = listing(viewing.recommendations(copied, settings, window))
    state_file(copied).write_text('{"key": {"settings": ')  # a write cut short
    assert stored_plan.load(copied, settings, window, copied.version()) is None
    assert Viewing(settings).recommendations(copied, window, copied.version()) == expected


def test_rollup_stores_it_and_then_leaves_it_alone(copied: Lake, cli: Callable[..., Result]) -> None:
    state_file(copied).unlink()
    first = cli("warehouse", "rollup", "--warehouse", str(copied.root))
    assert first.exit_code == 0, first.output
    assert "stored for the dashboard" in first.stderr
    written = state_file(copied).stat().st_mtime_ns
    again = cli("warehouse", "rollup", "--warehouse", str(copied.root))
    assert again.exit_code == 0, again.output
    assert state_file(copied).stat().st_mtime_ns == written, "a current listing was ranked and written again"


def test_nothing_is_stored_when_the_warehouse_changes_meanwhile(
    copied: Lake, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file(copied).unlink()
    versions = itertools.chain(["before"], itertools.repeat("after"))  # new data lands while it ranks
    monkeypatch.setattr(Lake, "version", lambda self: next(versions))
    assert stored_plan.store(copied, settings, utc_now()) is None
    assert not state_file(copied).exists()
