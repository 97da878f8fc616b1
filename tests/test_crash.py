"""A Parquet part killed mid-write leaves no partial part visible and the warehouse readable.

A write is staged under ``_tmp/``; the journal under ``_journal/`` is the commit point. These tests kill real writer
processes at random moments, and model the two deterministic crash points (just before and just after the journal
exists), then check what readers (polars and DuckDB) see and what the next writer's recovery leaves behind.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import REPO, T0, sample_rows
from warehouse import delta_log, maintenance
from warehouse.ingest import append, conform
from warehouse.lake import Lake, Partition, Staged
from warehouse.schema import GPU_SAMPLES, TABLES
from warehouse.views import connect

# ------------------------------------------------------------------------------- writers killed at random

DAYS = 3
CLUSTERS = ("c-east", "c-west")
GPUS_PER_PARTITION = 4
SAMPLES_PER_GPU = 10_000
ROWS_PER_PARTITION = GPUS_PER_PARTITION * SAMPLES_PER_GPU
PARTITIONS_PER_BATCH = DAYS * len(CLUSTERS)
ROWS_PER_BATCH = ROWS_PER_PARTITION * PARTITIONS_PER_BATCH  # 240,000 rows in 6 parts
BATCH_START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)

KILLS = 7
KILL_DELAYS_S = (0.05, 1.5)
BATCHES_PER_WRITER = 40  # far more than a writer can append before it is killed; bounds the loop regardless
READY_TIMEOUT_S = 30.0

# argv[1]: JSON {root, first, count, log, days, clusters, gpus, samples, base_us}. The writer appends batches
# first..first+count-1; the log gets "ready" once it has built its first batch (so the kill delay is spent
# appending) and "committed <n>" each time append() has returned for batch n.
WRITER = """
import json
import sys

import numpy as np
import pyarrow as pa

from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

p = json.loads(sys.argv[1])


def batch(n: int) -> pa.Table:
    rng = np.random.default_rng(n)
    steps = np.arange(p["samples"], dtype=np.int64) * 8_000_000
    ts, cluster, gpu = [], [], []
    for day in range(p["days"]):
        for name in p["clusters"]:
            for g in range(p["gpus"]):
                ts.append(p["base_us"] + day * 86_400_000_000 + steps)
                cluster.append(np.full(p["samples"], name, dtype=object))
                gpu.append(np.full(p["samples"], f"GPU-batch-{n}-{name}-{g}", dtype=object))
    rows = sum(len(chunk) for chunk in ts)
    return pa.table(
        {
            "ts": pa.array(np.concatenate(ts), pa.timestamp("us", tz="UTC")),
            "cluster": pa.array(np.concatenate(cluster), pa.string()),
            "node": pa.array(["node-1"] * rows, pa.string()),
            "gpu_uuid": pa.array(np.concatenate(gpu), pa.string()),
            "util_pct": pa.array(rng.uniform(0.0, 100.0, rows).astype(np.float32)),
            "power_w": pa.array(rng.uniform(50.0, 700.0, rows).astype(np.float32)),
            "source": pa.array(["nvml"] * rows, pa.string()),
        }
    )


lake = Lake(p["root"], create=True)
data = batch(p["first"])
with open(p["log"], "a", buffering=1) as log:
    log.write("ready\\n")
    for n in range(p["first"], p["first"] + p["count"]):
        append(lake, GPU_SAMPLES, data)
        log.write(f"committed {n}\\n")
        data = batch(n + 1)
"""

BATCH_OF = pl.col("gpu_uuid").str.extract(r"^GPU-batch-(\d+)-", 1).cast(pl.Int64)


def _start_writer(root: Path, first: int, log: Path, stderr: Path) -> subprocess.Popen[bytes]:
    params = {
        "root": str(root),
        "first": first,
        "count": BATCHES_PER_WRITER,
        "log": str(log),
        "days": DAYS,
        "clusters": CLUSTERS,
        "gpus": GPUS_PER_PARTITION,
        "samples": SAMPLES_PER_GPU,
        "base_us": int(BATCH_START.timestamp() * 1_000_000),
    }
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", WRITER, json.dumps(params)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _log_lines(log: Path) -> list[str]:
    if not log.exists():
        return []
    text = log.read_text()
    return text[: text.rfind("\n") + 1].splitlines()  # a line is only counted once complete


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, stderr: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "ready" not in _log_lines(log):
        if proc.poll() is not None:
            pytest.fail(f"writer exited with {proc.returncode} before it was ready:\n{stderr.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"writer not ready after {READY_TIMEOUT_S} s:\n{stderr.read_text()}")
        time.sleep(0.01)


def _committed(log: Path) -> set[int]:
    return {int(line.split()[1]) for line in _log_lines(log) if line.startswith("committed ")}


def _visible_batches(lake: Lake) -> dict[int, int]:
    """Rows per writer batch as readers see them, after checking every visible part and the all-or-nothing rule."""
    reader = Lake(lake.root)
    journaled = {
        lake.root / tmp for journal in _journal_files(lake.root) for tmp, _ in json.loads(journal.read_text())["adds"]
    }
    for table in TABLES.values():
        for part in reader.parts(table):
            assert reader.table_dir(table) in part.parents or part in journaled, f"{part} is not a committed part"
            assert maintenance.verify_part(part) is None, f"visible part {part} does not decode"

    frame = reader.scan(GPU_SAMPLES).collect()  # every column of every visible part
    per_gpu_day = (
        frame.group_by("gpu_uuid", pl.col("ts").dt.epoch("d").alias("day"), "cluster")
        .agg(pl.len().alias("rows"))
        .with_columns(BATCH_OF.alias("batch"))
    )
    assert per_gpu_day["batch"].null_count() == 0, "rows that belong to no writer batch"
    per_partition = per_gpu_day.group_by("batch", "day", "cluster").agg(pl.col("rows").sum())
    partial = per_partition.filter(pl.col("rows") != ROWS_PER_PARTITION)
    assert partial.is_empty(), f"partition(s) holding part of a batch:\n{partial}"
    partitions = per_partition.group_by("batch").agg(pl.len().alias("partitions"))
    torn = partitions.filter(pl.col("partitions") != PARTITIONS_PER_BATCH)
    assert torn.is_empty(), f"batch(es) visible in only some of their partitions:\n{torn}"
    seen = dict(per_partition.group_by("batch").agg(pl.col("rows").sum()).iter_rows())

    con = connect(reader)
    duck = pl.DataFrame(
        con.sql("SELECT gpu_uuid, count(*) AS rows FROM gpu_samples GROUP BY 1").fetchall(),
        schema={"gpu_uuid": pl.String, "rows": pl.Int64},
        orient="row",
    )
    by_duckdb = dict(duck.group_by(BATCH_OF.alias("batch")).agg(pl.col("rows").sum()).iter_rows())
    assert by_duckdb == seen, "DuckDB and polars disagree on what is visible"
    assert set(seen.values()) <= {ROWS_PER_BATCH}
    return seen


def test_killed_writers_leave_whole_batches_and_a_readable_warehouse(tmp_path: Path) -> None:
    root = tmp_path / "wh"
    lake = Lake(root, create=True)
    rng = random.Random(20261102)
    visible: dict[int, int] = {}
    left_behind: list[tuple[float, int, int]] = []

    for kill in range(KILLS):
        first = kill * BATCHES_PER_WRITER
        log, stderr = tmp_path / f"writer-{kill}.log", tmp_path / f"writer-{kill}.err"
        proc = _start_writer(root, first, log, stderr)
        try:
            _wait_ready(proc, log, stderr)
            delay = rng.uniform(*KILL_DELAYS_S)
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"writer ended by itself:\n{stderr.read_text()}"
        left_behind.append((round(delay, 2), len(_journal_files(root)), len(_tmp_files(root))))

        now_visible = _visible_batches(lake)
        assert set(now_visible) <= set(range(first + BATCHES_PER_WRITER)), "rows of a batch nobody wrote"
        assert _committed(log) <= set(now_visible), "a batch whose append() returned is not visible"
        assert set(visible) <= set(now_visible), "a batch visible before this kill has disappeared"
        visible = now_visible

    # (delay, journals, temp files) after each kill: shows which kills landed mid-transaction (`pytest -s`).
    print(f"kills: {left_behind}; batches visible: {len(visible)}")

    with Lake(root, retire_grace_s=0).writing():
        pass
    assert _journal_files(root) == []
    assert _tmp_files(root) == []
    assert _visible_batches(lake) == visible, "recovery changed what readers see"
    table_dir = lake.table_dir(GPU_SAMPLES)
    assert all(table_dir in part.parents for part in lake.parts(GPU_SAMPLES))
    assert len(lake.parts(GPU_SAMPLES)) == PARTITIONS_PER_BATCH * len(visible)
    # The Delta log, written after each commit's links and rolled forward with it, lists what gpuledger reads.
    assert delta_log.logged_parts(table_dir) == sorted(str(p.relative_to(table_dir)) for p in lake.parts(GPU_SAMPLES))
    assert pl.scan_delta(str(table_dir)).select(pl.len()).collect().item() == ROWS_PER_BATCH * len(visible)


# ------------------------------------------------------------------------------- deterministic crash points


class WriterKilled(BaseException):
    """Stands for SIGKILL: a BaseException, so nothing between the crash point and the test catches it."""


def _die(self: Lake, journal: object, version: int) -> None:
    raise WriterKilled


def _stage_two_partitions(lake: Lake) -> list[Staged]:
    """Stage one batch of 150 GPU-new rows across two partitions: (T0's day, c1) and (the next day, c2)."""
    day2 = T0 + dt.timedelta(days=1)
    return [
        lake.stage(GPU_SAMPLES, Partition(T0.date(), "c1"), conform(GPU_SAMPLES, sample_rows("GPU-new", range(100)))),
        lake.stage(
            GPU_SAMPLES,
            Partition(day2.date(), "c2"),
            conform(GPU_SAMPLES, sample_rows("GPU-new", range(50), start=day2, cluster="c2")),
        ),
    ]


def _rows(root: Path) -> pl.DataFrame:
    """Every gpu_samples row a fresh reader sees, in a stable order."""
    return Lake(root).scan(GPU_SAMPLES).collect().sort("gpu_uuid", "ts")


def _duckdb_count(root: Path) -> int:
    con = connect(Lake(root))
    [(count,)] = con.sql("SELECT count(*) FROM gpu_samples").fetchall()
    return int(count)


def _journal_files(root: Path) -> list[Path]:
    return sorted((root / "_journal").glob("*.json"))


def _tmp_files(root: Path) -> list[Path]:
    return sorted((root / "_tmp").iterdir()) if (root / "_tmp").is_dir() else []


def test_a_writer_killed_right_after_its_commit_point_is_seen_whole_and_rolled_forward(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-old", range(30)))
    old_parts = lake.parts(GPU_SAMPLES)

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_apply", _die)
        with pytest.raises(WriterKilled), lake.writing():
            staged = _stage_two_partitions(lake)
            lake.commit(staged)

    # The commit point exists; nothing was renamed into place.
    [journal_file] = _journal_files(root)
    assert json.loads(journal_file.read_text()) == {
        "adds": [[str(s.tmp.relative_to(root)), str(s.final.relative_to(root))] for s in staged],
        "removes": [],
    }
    assert all(s.tmp.exists() and not s.final.exists() for s in staged)
    assert {s.final.parent.parent.name for s in staged} == {"date=2026-11-02", "date=2026-11-03"}

    # A reader already sees the whole batch (read from _tmp/ through the journal), and nothing twice.
    reader = Lake(root)
    assert sorted(reader.parts(GPU_SAMPLES)) == sorted([*old_parts, *(s.tmp for s in staged)])
    before = _rows(root)
    assert before.height == 30 + 150
    assert before.filter(pl.col("gpu_uuid") == "GPU-new").height == 150
    assert _duckdb_count(root) == 180
    assert all(maintenance.verify_part(p) is None for p in reader.parts(GPU_SAMPLES))

    # The next writer rolls the journal forward: parts renamed into place, journal and temp files gone.
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert _journal_files(root) == []
    assert _tmp_files(root) == []
    assert all(s.final.exists() and not s.tmp.exists() for s in staged)
    assert sorted(Lake(root).parts(GPU_SAMPLES)) == sorted([*old_parts, *(s.final for s in staged)])
    after = _rows(root)
    assert after.equals(before)
    assert _duckdb_count(root) == 180


def test_a_compaction_killed_after_its_commit_point_never_counts_a_row_twice(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(40)))
    append(lake, GPU_SAMPLES, sample_rows("GPU-b", range(60)))
    small = lake.parts(GPU_SAMPLES)
    assert len(small) == 2
    before = _rows(root)

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_apply", _die)
        with pytest.raises(WriterKilled):
            maintenance.compact(lake)

    [journal_file] = _journal_files(root)
    journal = json.loads(journal_file.read_text())
    assert sorted(journal["removes"]) == sorted(str(p.relative_to(root)) for p in small)
    [(merged_tmp, merged_final)] = journal["adds"]
    # Readers see the merged part only (from _tmp/), although the small parts are still on disk.
    assert all(p.exists() for p in small)
    assert Lake(root).parts(GPU_SAMPLES) == [root / merged_tmp]
    assert _rows(root).equals(before)
    assert _duckdb_count(root) == 100

    with Lake(root, retire_grace_s=0).writing():
        pass
    assert _journal_files(root) == []
    assert _tmp_files(root) == []
    assert not any(p.exists() for p in small)
    assert Lake(root).parts(GPU_SAMPLES) == [root / merged_final]
    assert _rows(root).equals(before)
    assert _duckdb_count(root) == 100


def test_a_writer_killed_before_its_commit_point_leaves_nothing_visible(lake: Lake) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-old", range(30)))
    old_parts = lake.parts(GPU_SAMPLES)
    before = _rows(root)

    with lake.writing():
        staged = _stage_two_partitions(lake)
        # killed here: the parts are complete files under _tmp/, but no journal names them
    assert all(s.tmp.exists() for s in staged)
    assert _journal_files(root) == []

    reader = Lake(root)
    assert reader.parts(GPU_SAMPLES) == old_parts
    assert _rows(root).equals(before)
    assert _rows(root).filter(pl.col("gpu_uuid") == "GPU-new").is_empty()
    assert _duckdb_count(root) == 30

    # The next writer deletes the orphans; what readers see does not change.
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert _tmp_files(root) == []
    assert not any(s.final.exists() for s in staged)
    assert Lake(root).parts(GPU_SAMPLES) == old_parts
    assert _rows(root).equals(before)
