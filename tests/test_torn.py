"""Documents read back from the warehouse are not trusted: a journal, retired-parts or state document that is torn
or names a path outside the warehouse's tables is never applied, never blocks a reader, and is set aside.

Journals are written whole under ``_tmp/`` and renamed into place, so a torn one was never a commit point; one that
names ``../victim.txt`` would otherwise make the next writer delete or move a file outside the warehouse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

from tests.conftest import sample_rows
from warehouse.ingest import append
from warehouse.lake import MARKER, Lake
from warehouse.schema import GPU_SAMPLES

Cli = Callable[..., Result]
JOURNAL = "1700000000000000000-0badc0de.json"
VICTIM_TEXT = "not the warehouse's to touch\n"
PART = "gpu_samples/date=2026-11-02/cluster=c1/part-20261102T000000-000000000000.parquet"


def _rows(root: Path) -> int:
    return int(Lake(root).scan(GPU_SAMPLES).select(pl.len()).collect().item())


# ------------------------------------------------------------------------------- paths confined to the warehouse


def _escapes(victim: Path) -> dict[str, dict[str, list]]:
    """Journals a hostile or broken process could leave, each aimed at ``victim`` (a file beside the warehouse)."""
    return {
        "remove-dotdot": {"adds": [], "removes": ["../victim.txt"]},
        "remove-absolute": {"adds": [], "removes": [str(victim)]},
        "remove-dotdot-inside-table": {"adds": [], "removes": ["gpu_samples/../../victim.txt"]},
        "remove-not-a-part": {"adds": [], "removes": [".gpuledger-warehouse"]},
        "add-final-outside": {"adds": [["_tmp/staged.parquet", "../victim.txt"]], "removes": []},
        "add-final-not-in-a-table": {"adds": [["_tmp/staged.parquet", "_state/victim.json"]], "removes": []},
        "add-staged-outside": {"adds": [["../victim.txt", PART]], "removes": []},
        "add-staged-not-in-tmp": {"adds": [["gpu_samples/victim.parquet", PART]], "removes": []},
    }


ESCAPES = sorted(_escapes(Path("/x")))


@pytest.mark.parametrize("case", ESCAPES)
def test_a_journal_naming_a_path_outside_the_tables_is_set_aside_never_applied(
    lake: Lake, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(30)))
    parts_before = Lake(root).parts(GPU_SAMPLES)
    victim = root.parent / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    (root / "_state").mkdir()
    (root / "_state" / "victim.json").write_text("{}")
    (root / "_tmp" / "staged.parquet").write_bytes(b"staged bytes")
    (root / "_journal").mkdir(exist_ok=True)
    (root / "_journal" / JOURNAL).write_text(json.dumps(_escapes(victim)[case]))

    caplog.set_level(logging.WARNING, logger="warehouse.lake")
    reader = Lake(root)
    assert reader.parts(GPU_SAMPLES) == parts_before, "a reader honoured the bad journal"
    assert _rows(root) == 30
    assert f"journal {root / '_journal' / JOURNAL} is torn or invalid (names a path" in caplog.text

    append(lake, GPU_SAMPLES, sample_rows("GPU-b", range(10)))  # the next writer
    assert victim.read_text() == VICTIM_TEXT
    assert (root / "_state" / "victim.json").read_text() == "{}"
    assert (root / MARKER).exists()
    assert not (root / "_journal" / JOURNAL).exists()
    assert json.loads((root / "_quarantine" / "_journal" / JOURNAL).read_text()) == _escapes(victim)[case]
    assert f"moved it to {root / '_quarantine' / '_journal' / JOURNAL}" in caplog.text
    assert _rows(root) == 40


def test_a_symlink_out_of_a_table_is_not_a_part_a_journal_may_name(lake: Lake) -> None:
    root = lake.root
    victim = root.parent / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    linked = root / "gpu_samples" / "date=2026-11-02" / "cluster=c1"
    linked.mkdir(parents=True)
    (linked / "escape").symlink_to(root.parent, target_is_directory=True)
    rel = "gpu_samples/date=2026-11-02/cluster=c1/escape/part-x.parquet"
    (root / "_journal").mkdir()
    (root / "_journal" / JOURNAL).write_text(json.dumps({"adds": [], "removes": [rel]}))
    [(path, reason)] = Lake(root).bad_documents()
    assert path == root / "_journal" / JOURNAL
    assert reason == f"names a path that is not a part under a table directory: {rel!r}"


def test_commit_refuses_to_journal_a_path_outside_the_tables(lake: Lake) -> None:
    victim = lake.root.parent / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    with lake.writing(), pytest.raises(ValueError, match="outside the warehouse"):
        lake.commit([], removes=[lake.root / "gpu_samples" / ".." / ".." / "victim.txt"])
    assert victim.read_text() == VICTIM_TEXT
    assert not list(lake.root.glob("_journal/*.json"))


# ------------------------------------------------------------------------------- torn journals

TORN = {
    "empty": b"",
    "half-written": b'{"adds": [["_tmp/3f2a.parquet", "gpu_samples/date=2026-11-1',
    "zeros": b"\x00" * 64,
    "not-utf8": b"\xff\xfe{",
    "wrong-shape": b"[]",
    "missing-removes": b'{"adds": []}',
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from gpuledger.cli import main

    root = tmp_path_factory.mktemp("torn") / "wh"
    result = CliRunner().invoke(
        main, ["simulate", "--warehouse", str(root), "--gpus", "4", "--days", "1", "--end", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copy(simulated: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "wh"
    shutil.copytree(simulated, target)
    return target


@pytest.mark.parametrize("how", sorted(TORN))
def test_a_torn_journal_blocks_no_reader_and_check_names_then_quarantines_it(cli: Cli, copy: Path, how: str) -> None:
    root = copy
    clean_report = cli("report", "--warehouse", str(root), "--format", "json")
    assert clean_report.exit_code == 0, clean_report.output
    count = "SELECT count(*) AS n FROM gpu_samples"
    clean_count = cli("query", "--warehouse", str(root), count, "--format", "json")
    journal = root / "_journal" / JOURNAL
    journal.parent.mkdir(exist_ok=True)
    journal.write_bytes(TORN[how])

    report = cli("report", "--warehouse", str(root), "--format", "json")
    assert report.exit_code == 0, report.output
    assert report.stdout == clean_report.stdout
    query = cli("query", "--warehouse", str(root), count, "--format", "json")
    assert query.exit_code == 0, query.output
    assert query.stdout == clean_count.stdout

    check = cli("warehouse", "check", "--warehouse", str(root))
    assert check.exit_code == 1, check.output
    assert "Traceback" not in check.output
    [listed] = [line for line in check.stdout.splitlines() if line.startswith("corrupt: ")]
    assert listed.startswith(f"corrupt: {journal} (")
    assert journal.exists(), "check without --quarantine must not move anything"

    moved = cli("warehouse", "check", "--warehouse", str(root), "--quarantine")
    assert moved.exit_code == 0, moved.output
    [quarantined] = [line for line in moved.stdout.splitlines() if line.startswith("quarantined: ")]
    assert quarantined.startswith(f"quarantined: {journal} (")
    assert not journal.exists()
    assert (root / "_quarantine" / "_journal" / JOURNAL).read_bytes() == TORN[how]
    assert cli("warehouse", "check", "--warehouse", str(root)).stdout == "all parts readable\n"


def test_the_next_writer_sets_a_torn_journal_aside_and_clears_its_staged_files(
    lake: Lake, caplog: pytest.LogCaptureFixture
) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(30)))
    with Lake(root, retire_grace_s=0).writing():
        pass
    staged = root / "_tmp" / "3f2a.parquet"
    staged.write_bytes(b"a part the torn journal was about to name")
    (root / "_journal" / JOURNAL).write_bytes(TORN["half-written"])

    caplog.set_level(logging.WARNING, logger="warehouse.lake")
    append(lake, GPU_SAMPLES, sample_rows("GPU-b", range(10)))
    assert not (root / "_journal" / JOURNAL).exists()
    assert (root / "_quarantine" / "_journal" / JOURNAL).read_bytes() == TORN["half-written"]
    assert not staged.exists()
    assert f"journal {root / '_journal' / JOURNAL} is torn or invalid" in caplog.text
    assert _rows(root) == 40


def test_a_torn_simulate_and_compact_still_run(cli: Cli, copy: Path) -> None:
    root = copy
    (root / "_journal").mkdir(exist_ok=True)
    (root / "_journal" / JOURNAL).write_bytes(TORN["empty"])
    compact = cli("warehouse", "compact", "--warehouse", str(root))
    assert compact.exit_code == 0, compact.output
    assert (root / "_quarantine" / "_journal" / JOURNAL).exists()
    (root / "_journal" / JOURNAL).write_bytes(TORN["zeros"])
    simulate = cli("simulate", "--warehouse", str(root), "--gpus", "4", "--days", "1", "--end", "2026-11-21")
    assert simulate.exit_code == 0, simulate.output
    assert not (root / "_journal" / JOURNAL).exists()


# ------------------------------------------------------------------------------- torn state documents


@pytest.mark.parametrize("text", [b"", b'{"watermark": "2026-11-0', b"[1, 2]", b"\xff"])
def test_a_torn_state_document_reads_as_absent_and_is_set_aside(
    lake: Lake, text: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    name = "scrape/http://prom:9090"
    lake.write_state(name, {"watermark": "2026-11-02T00:00:00+00:00"})
    [path] = (lake.root / "_state").glob("*.json")
    path.write_bytes(text)
    caplog.set_level(logging.WARNING, logger="warehouse.lake")
    assert lake.read_state(name) is None
    assert not path.exists()
    assert (lake.root / "_quarantine" / "_state" / path.name).read_bytes() == text
    assert f"state document {path} is torn or invalid" in caplog.text
    lake.write_state(name, {"watermark": "2026-11-03T00:00:00+00:00"})
    assert lake.read_state(name) == {"watermark": "2026-11-03T00:00:00+00:00"}


def test_a_torn_retired_parts_document_is_skipped_and_set_aside(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(30)))
    torn = root / "_retired" / JOURNAL
    torn.parent.mkdir(exist_ok=True)  # a commit that only adds retires nothing
    torn.write_bytes(b'{"retired": [["gpu_sam')
    caplog.set_level(logging.WARNING, logger="warehouse.lake")
    assert _rows(root) == 30
    assert f"retired-parts document {torn} is torn or invalid" in caplog.text
    append(lake, GPU_SAMPLES, sample_rows("GPU-b", range(10)))
    assert (root / "_quarantine" / "_retired" / JOURNAL).exists()
    assert _rows(root) == 40
