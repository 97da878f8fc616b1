"""Readers see a consistent snapshot while writers compact, split and roll up: a part a commit replaces stays
readable at its path (retired, invisible to new listings) until the grace period is over.

A reader lists parts, then opens them later; before retirement, a compaction that deleted a listed part made the
read fail with "No files found that match the pattern ...part-....parquet".
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from tests.conftest import REPO, T0, sample_rows
from warehouse import maintenance
from warehouse.ingest import append, conform
from warehouse.lake import Lake, Partition
from warehouse.schema import GPU_MINUTES, GPU_SAMPLES
from warehouse.views import run_query

GPUS = 4
APPENDS = 8
SAMPLES_PER_APPEND = 90  # per GPU, every 60 s, spread over two days
ROUNDS = 2

# argv[1]: JSON {root, rounds, done}. Each round: compact, roll up, split every partition of gpu_samples into 6
# parts (one transaction per partition, removing the part it replaces), roll up again. Writes "done" at the end.
WRITER = """
import json
import sys
from pathlib import Path

import polars as pl

from gpuledger import jobs
from gpuledger.settings import load_settings
from warehouse import maintenance
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

p = json.loads(sys.argv[1])
lake = Lake(p["root"])
settings = load_settings(None)


def split(lake: Lake, pieces: int) -> None:
    with lake.writing():
        for partition in lake.partitions(GPU_SAMPLES):
            parts = lake.parts(GPU_SAMPLES, start=partition.date, end=partition.date, cluster=partition.cluster)
            frame = pl.read_parquet([str(x) for x in parts])
            size = -(-frame.height // pieces)
            staged = [
                lake.stage(GPU_SAMPLES, partition, frame.slice(i, size).to_arrow().cast(GPU_SAMPLES.schema))
                for i in range(0, frame.height, size)
            ]
            lake.commit(staged, removes=parts)


for _ in range(p["rounds"]):
    maintenance.compact(lake)
    jobs.refresh(lake, settings)
    split(lake, 6)
    jobs.refresh(lake, settings)
Path(p["done"]).write_text("done")
"""


def _batch(n: int) -> pa.Table:
    start = T0 + dt.timedelta(hours=23) + dt.timedelta(minutes=n * SAMPLES_PER_APPEND)
    return pa.concat_tables(
        [
            sample_rows(f"GPU-{g}", range(SAMPLES_PER_APPEND), start=start, fb_used=(n * GPUS + g + 1) << 20)
            for g in range(GPUS)
        ]
    )


def _polars_read(root: Path) -> tuple[int, int]:
    frame = Lake(root).scan(GPU_SAMPLES).select(pl.len(), pl.col("fb_used_bytes").sum()).collect()
    return int(frame.item(0, 0)), int(frame.item(0, 1))


def _duckdb_read(root: Path) -> tuple[int, int]:
    [row] = run_query(Lake(root), "SELECT count(*) AS n, sum(fb_used_bytes) AS total FROM gpu_samples").to_pylist()
    return int(row["n"]), int(row["total"])


def _minutes(root: Path) -> tuple[int, int]:
    by_polars = Lake(root).scan(GPU_MINUTES).select(pl.len()).collect().item()
    [row] = run_query(Lake(root), "SELECT count(*) AS n FROM gpu_minutes").to_pylist()
    return int(by_polars), int(row["n"])


def test_readers_never_fail_and_count_exactly_while_compactions_and_rollups_run(tmp_path: Path, settings) -> None:
    from gpuledger import jobs

    root = tmp_path / "wh"
    lake = Lake(root, create=True)
    for n in range(APPENDS):
        append(lake, GPU_SAMPLES, _batch(n))
    jobs.refresh(lake, settings)
    samples = _polars_read(root)
    assert samples[0] == GPUS * APPENDS * SAMPLES_PER_APPEND
    assert _duckdb_read(root) == samples
    minutes = _minutes(root)
    assert minutes[0] == minutes[1] > 0

    done = tmp_path / "writer.done"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    with (tmp_path / "writer.err").open("wb") as err:
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, json.dumps({"root": str(root), "rounds": ROUNDS, "done": str(done)})],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    reads = 0
    failures: list[str] = []
    wrong: list[str] = []
    try:
        while writer.poll() is None:
            for name, read, want in (
                ("polars gpu_samples", _polars_read, samples),
                ("duckdb gpu_samples", _duckdb_read, samples),
                ("gpu_minutes", _minutes, (minutes[0], minutes[0])),
            ):
                try:
                    got = read(root)
                except Exception as exc:  # every failure is counted, then reported
                    failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                    continue
                reads += 1
                if got != want:
                    wrong.append(f"{name}: {got} != {want}")
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(timeout=60)
    assert writer.returncode == 0 and done.exists(), (tmp_path / "writer.err").read_text()
    assert failures == [], f"{len(failures)} of {reads + len(failures)} reads failed: {failures[:5]}"
    assert wrong == [], f"{len(wrong)} of {reads} reads counted wrong: {wrong[:5]}"
    assert reads >= 20, f"only {reads} reads overlapped the writer"
    print(f"{reads} reads during {ROUNDS} rounds of compaction, split and rollup")

    assert _polars_read(root) == samples
    assert _duckdb_read(root) == samples
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert not list(root.glob("_retired/*.json"))
    assert _polars_read(root) == samples
    on_disk = sorted(p for p in lake.table_dir(GPU_SAMPLES).rglob("*.parquet"))
    assert on_disk == lake.parts(GPU_SAMPLES), "the next writer past the grace period unlinks every retired part"


# ------------------------------------------------------------------------------- the retirement rules


def _stage(lake: Lake, gpu: str, n: int = 20, name: str | None = None):
    return lake.stage(GPU_SAMPLES, Partition(T0.date(), "c1"), conform(GPU_SAMPLES, sample_rows(gpu, range(n))), name)


def test_a_part_resolved_before_a_compaction_stays_readable_until_the_grace_period_ends(lake: Lake) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(40)))
    append(lake, GPU_SAMPLES, sample_rows("GPU-b", range(60)))
    resolved = lake.parts(GPU_SAMPLES)
    version = lake.version()
    assert len(resolved) == 2
    appended = set(root.glob("_retired/*.json"))  # the appends' staged copies

    maintenance.compact(lake)
    [merged] = lake.parts(GPU_SAMPLES)
    assert merged not in resolved
    assert lake.version() != version
    # The old snapshot still reads whole, by both engines' paths.
    assert pl.read_parquet([str(p) for p in resolved]).height == 100
    assert maintenance.check(lake) == [], "retired parts are not checked (nor reported)"
    [retired] = set(root.glob("_retired/*.json")) - appended

    with lake.writing():  # within the grace period: nothing is unlinked
        pass
    assert all(p.exists() for p in resolved) and retired.exists()
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert not any(p.exists() for p in resolved) and not retired.exists()
    assert lake.parts(GPU_SAMPLES) == [merged]


def test_a_pruned_partition_disappears_at_once_and_its_folders_after_the_grace_period(lake: Lake) -> None:
    root = lake.root
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(40)))
    [part] = lake.parts(GPU_SAMPLES)
    version = lake.version()
    assert maintenance.prune(lake, keep_days=1, today=T0.date() + dt.timedelta(days=5)) == 1
    assert lake.parts(GPU_SAMPLES) == []
    assert lake.version() != version
    assert part.exists()
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert not part.exists()
    assert not (root / "gpu_samples" / f"date={T0.date().isoformat()}").exists(), "empty partition folders removed"


def test_a_pending_journals_staged_path_stays_readable_after_the_roll_forward(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lake.root

    def killed(self: Lake, journal: object, version: int) -> None:
        raise RuntimeError("killed after the commit point")

    with monkeypatch.context() as patch, lake.writing():
        staged = _stage(lake, "GPU-a")
        patch.setattr(Lake, "_apply", killed)
        with pytest.raises(RuntimeError):
            lake.commit([staged])
    assert Lake(root).parts(GPU_SAMPLES) == [staged.tmp]  # what a reader resolves now

    with lake.writing():  # the next writer rolls the journal forward
        pass
    assert Lake(root).parts(GPU_SAMPLES) == [staged.final]
    assert pl.read_parquet(staged.tmp).height == 20, "the staged path a reader resolved still reads"
    assert os.path.samefile(staged.tmp, staged.final), "linked, not copied"


def test_a_part_name_that_comes_back_while_its_old_file_is_retired_is_neither_hidden_nor_deleted(lake: Lake) -> None:
    """Rollup parts are named after their inputs, so a name can return (a setting changed, then changed back)."""
    root = lake.root
    with lake.writing():
        first = _stage(lake, "GPU-a", 10, name="part-same.parquet")
        lake.commit([first])
        other = _stage(lake, "GPU-b", 20, name="part-other.parquet")
        lake.commit([other], removes=[first.final])
        again = _stage(lake, "GPU-c", 30, name="part-same.parquet")
        lake.commit([again], removes=[other.final])
    assert lake.parts(GPU_SAMPLES) == [again.final]
    assert lake.scan(GPU_SAMPLES).collect()["gpu_uuid"].unique().to_list() == ["GPU-c"]
    with Lake(root, retire_grace_s=0).writing():
        pass
    assert lake.parts(GPU_SAMPLES) == [again.final]
    assert lake.scan(GPU_SAMPLES).select(pl.len()).collect().item() == 30
    assert not other.final.exists()
