"""A corrupt part yields one clear error naming the file, and gpuledger can move it aside without losing other data.

Each test builds a small warehouse with ``gpuledger simulate`` in its own ``tmp_path`` (the session-shared
``sim_warehouse`` is never touched), damages one ``gpu_samples`` part, and drives the CLI as a user would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from click.testing import Result

from warehouse import maintenance
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES, TABLES

Cli = Callable[..., Result]


def _overwrite_middle(path: Path) -> None:
    """Overwrite the middle half of the file (its second and third quarters) with 0xFF bytes; size unchanged."""
    data = bytearray(path.read_bytes())
    start, stop = len(data) // 4, 3 * len(data) // 4
    data[start:stop] = b"\xff" * (stop - start)
    path.write_bytes(bytes(data))


def _truncate_half(path: Path) -> None:
    """Cut the file to half its size: the footer (schema, row groups) is gone."""
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


CORRUPTIONS = {"overwrite-middle": _overwrite_middle, "truncate-half": _truncate_half}


@pytest.fixture
def root(tmp_path: Path, cli: Cli) -> Path:
    """A fresh 8-GPU x 2-day warehouse built through the CLI."""
    path = tmp_path / "wh"
    result = cli("simulate", "--warehouse", str(path), "--gpus", "8", "--days", "2", "--end", "2026-11-20")
    assert result.exit_code == 0, result.output
    return path


def _row_counts(root: Path) -> dict[str, int]:
    lake = Lake(root)
    return {name: lake.scan(table).select(pl.len()).collect().item() for name, table in TABLES.items()}


def _victim(root: Path) -> Path:
    """The gpu_samples part to damage: the first one, as readers list it."""
    parts = Lake(root).parts(GPU_SAMPLES)
    assert len(parts) >= 2, "the simulated warehouse should have a gpu_samples part per day"
    return parts[0]


def _quarantine_command(root: Path) -> str:
    return f"`gpuledger warehouse check --warehouse {root} --quarantine`"


def _stderr(result: Result) -> str | None:
    """Captured stderr, or None with an old click whose runner mixes it into ``output`` only."""
    try:
        return result.stderr
    except ValueError:
        return None


def _assert_names_corrupt_part(result: Result, root: Path, part: Path) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    [line] = result.output.splitlines()  # stderr is part of output with every click version
    prefix = f"Error: corrupt Parquet part {part} ("
    suffix = f"): move it aside with {_quarantine_command(root)}"
    assert line.startswith(prefix), line
    assert line.endswith(suffix), line
    reason = line[len(prefix) : -len(suffix)]
    assert reason.strip(), f"no reason given: {line}"
    if _stderr(result) is not None:
        assert _stderr(result) == line + "\n"


@dataclass(frozen=True)
class Damaged:
    root: Path
    part: Path
    how: str
    part_rows: int
    """Rows the part held before the damage (read from its footer)."""
    rows_before: dict[str, int]
    """Rows per table before the damage."""


@pytest.fixture(params=sorted(CORRUPTIONS))
def damaged(request: pytest.FixtureRequest, root: Path) -> Damaged:
    """The warehouse with its first gpu_samples part damaged one way or the other."""
    part = _victim(root)
    part_rows = pq.read_metadata(part).num_rows
    assert part_rows > 0
    before = _row_counts(root)
    CORRUPTIONS[request.param](part)
    assert maintenance.verify_part(part) is not None, "the damage should make the part unreadable"
    return Damaged(root, part, request.param, part_rows, before)


def test_report_fails_with_one_line_naming_the_corrupt_part(
    cli: Cli, damaged: Damaged, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, part = damaged.root, damaged.part
    if damaged.how == "overwrite-middle":
        # The footer is intact, and the middle of the file holds the big measurement column chunks, which a report
        # reads only when it recomputes the minute rollup (a fresh rollup needs just ts and the GPU identity);
        # new state rules make it recompute, so it reads the damaged bytes.
        monkeypatch.setenv("GPULEDGER_ACTIVE_THRESHOLD_PCT", "7.5")
    result = cli("report", "--warehouse", str(root))
    _assert_names_corrupt_part(result, root, part)


def test_query_fails_with_one_line_naming_the_corrupt_part(cli: Cli, damaged: Damaged) -> None:
    root, part = damaged.root, damaged.part
    # Every column decoded: whichever column chunk the damage hit, DuckDB must read it.
    everything = cli("query", "--warehouse", str(root), "SELECT count(*) FROM (SELECT DISTINCT * FROM gpu_samples)")
    _assert_names_corrupt_part(everything, root, part)
    if damaged.how == "truncate-half":
        # Without a footer even a count, which DuckDB answers from the footers, cannot be read.
        count = cli("query", "--warehouse", str(root), "SELECT count(*) FROM gpu_samples")
        _assert_names_corrupt_part(count, root, part)


def test_check_lists_then_quarantines_the_part_and_keeps_the_other_data(cli: Cli, damaged: Damaged) -> None:
    root, part, rows, before = damaged.root, damaged.part, damaged.part_rows, damaged.rows_before
    damaged_bytes = part.read_bytes()

    check = cli("warehouse", "check", "--warehouse", str(root))
    assert check.exit_code == 1, check.output
    assert "Traceback" not in check.output
    lines = check.output.splitlines()
    [listed] = [line for line in lines if line.startswith("corrupt: ")]
    assert listed.startswith(f"corrupt: {part} (")
    assert f"run {_quarantine_command(root)} to move them aside" in lines
    assert part.exists(), "check without --quarantine must not move anything"

    moved = cli("warehouse", "check", "--warehouse", str(root), "--quarantine")
    assert moved.exit_code == 0, moved.output
    [quarantined] = [line for line in moved.output.splitlines() if line.startswith("quarantined: ")]
    assert quarantined.startswith(f"quarantined: {part} (")
    target = root / "_quarantine" / part.relative_to(root)
    assert not part.exists()
    assert target.read_bytes() == damaged_bytes
    assert part not in Lake(root).parts(GPU_SAMPLES)

    after = _row_counts(root)
    assert after["gpu_samples"] == before["gpu_samples"] - rows
    assert {k: v for k, v in after.items() if k != "gpu_samples"} == {
        k: v for k, v in before.items() if k != "gpu_samples"
    }
    counted = cli("query", "--warehouse", str(root), "SELECT count(*) AS n FROM gpu_samples", "--format", "json")
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.stdout) == [{"n": before["gpu_samples"] - rows}]

    again = cli("warehouse", "check", "--warehouse", str(root))
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == ["all parts readable"]

    report = cli("report", "--warehouse", str(root))
    assert report.exit_code == 0, report.output
    assert report.stdout.startswith("# gpuledger fleet report")

    as_json = cli("report", "--warehouse", str(root), "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    body = json.loads(as_json.stdout)
    gpu_hours = body["fleet"]["gpu_hours"]
    assert gpu_hours > 0
    # The report rounds each figure to 4 decimals, so allow that rounding on top of 1e-6 relative.
    rounding = 0.5e-4 * (len(body["states"]) + 1)
    assert sum(body["states"].values()) == pytest.approx(gpu_hours, rel=1e-6, abs=rounding)


def test_check_catches_damage_that_still_decodes(cli: Cli, root: Path) -> None:
    """A few bytes flipped inside a float page decode to wrong numbers; the page CRC written with every part
    catches it, so `warehouse check` reports the file instead of passing it."""
    part = _victim(root)
    data = bytearray(part.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = b"\xff" * 256
    part.write_bytes(bytes(data))
    result = cli("warehouse", "check", "--warehouse", str(root))
    assert result.exit_code == 1
    assert f"corrupt: {part} (" in result.output and "CRC checksum verification failed" in result.output


def test_quarantine_of_a_part_still_under_a_pending_journal(cli: Cli, root: Path, monkeypatch) -> None:
    """A writer killed after its commit point leaves a part in _tmp/ that readers already see; quarantine rolls
    the journal forward first and then moves the part from where it ended up."""
    from tests.conftest import sample_rows
    from warehouse.ingest import conform
    from warehouse.lake import Partition

    lake = Lake(root)

    def killed(self: Lake, journal: object, version: int) -> None:
        raise RuntimeError("killed after the commit point")

    with monkeypatch.context() as patch, lake.writing():
        staged = lake.stage(
            GPU_SAMPLES, Partition(sample_rows()["ts"][0].as_py().date(), "c1"), conform(GPU_SAMPLES, sample_rows())
        )
        patch.setattr(Lake, "_apply", killed)
        with pytest.raises(RuntimeError):
            lake.commit([staged])
    with staged.tmp.open("r+b") as handle:
        handle.truncate(staged.tmp.stat().st_size // 2)
    result = cli("warehouse", "check", "--warehouse", str(root), "--quarantine")
    assert result.exit_code == 0, result.output
    assert f"quarantined: {staged.final} (" in result.output
    assert (root / "_quarantine" / staged.final.relative_to(root)).exists()
    assert cli("warehouse", "check", "--warehouse", str(root)).output == "all parts readable\n"
