"""The agent's spool survives what a power cut or a bad disk leaves: torn, truncated and empty batches, a bad path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from click.testing import Result

from collector.agent import NodeAgent, Outcome, Spool
from collector.rows import Rows
from gpuledger import jobs
from tests.conftest import T0, sample_rows
from tests.http_servers import ExporterServer
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

SPOOL_FIX = "set the spool_dir setting (GPULEDGER_SPOOL_DIR) to a writable directory"


def batch(gpu: str, minutes: range = range(3), util: float = 50.0) -> Rows:
    """A batch as a sampler hands it over: the table's schema, values not checked (the warehouse checks them)."""
    data = sample_rows(gpu, minutes, util=util)
    schema = GPU_SAMPLES.schema
    columns = [
        data.column(f.name).cast(f.type) if f.name in data.column_names else pa.nulls(data.num_rows, f.type)
        for f in schema
    ]
    empty = Rows.empty()
    return Rows(pa.Table.from_arrays(columns, schema=schema), empty.allocations, empty.nodes)


def agent_for(root: Path, spool: Spool) -> NodeAgent:
    return NodeAgent(Rows.empty, lambda rows: jobs.ingest(Lake(root, create=True), rows), spool)


def stored_gpus(root: Path) -> list[str]:
    return sorted(Lake(root).scan(GPU_SAMPLES).collect()["gpu_uuid"].unique().to_list())


def test_torn_truncated_and_empty_batches_are_set_aside_and_the_rest_replays(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    for gpu in ("GPU-good-1", "GPU-torn", "GPU-empty", "GPU-missing", "GPU-good-2"):
        spool.put(batch(gpu))
    _, torn, empty, missing, _ = spool.batches()
    whole = (torn / "samples.arrow").read_bytes()
    (torn / "samples.arrow").write_bytes(whole[: len(whole) // 2])  # a write cut off mid-file
    (empty / "allocations.arrow").write_bytes(b"")  # a file created, never written
    (missing / "nodes.arrow").unlink()
    root = tmp_path / "wh"
    agent = agent_for(root, spool)
    agent._buffer.append(batch("GPU-fresh"))
    agent.flush()
    assert agent.stats.last_batch is Outcome.STORED
    assert stored_gpus(root) == ["GPU-fresh", "GPU-good-1", "GPU-good-2"]
    assert (agent.stats.replayed_batches, agent.stats.bad_batches) == (2, 3)
    assert spool.batches() == []
    assert sorted(p.name for p in spool.bad_dir.iterdir()) == sorted(b.name for b in (torn, empty, missing))
    agent.flush()  # set aside means never tried again
    assert (agent.stats.replayed_batches, agent.stats.bad_batches) == (2, 3)


def test_a_batch_the_warehouse_rejects_is_set_aside_not_replayed_forever(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.put(batch("GPU-bad", util=150.0))  # utilization over 100
    root = tmp_path / "wh"
    agent = agent_for(root, spool)
    agent._buffer.append(batch("GPU-fresh"))
    agent.flush()
    assert agent.stats.last_batch is Outcome.STORED and agent.stats.bad_batches == 1
    assert stored_gpus(root) == ["GPU-fresh"]
    assert len(list(spool.bad_dir.iterdir())) == 1 and spool.batches() == []


def test_a_fresh_batch_the_warehouse_rejects_is_kept_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    agent = agent_for(tmp_path / "wh", spool)
    agent._buffer.append(batch("GPU-bad", range(10), util=-1.0))
    agent.flush()
    assert agent.stats.last_batch is Outcome.REJECTED and spool.batches() == []
    (aside,) = spool.bad_dir.iterdir()
    assert Spool.read(aside).samples.num_rows == 10


def test_spool_writes_fsync_every_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.put(batch("GPU-a"))
    (kept,) = spool.batches()
    staged = [p for p in synced if "/.0" in p]  # the hidden staging folder and its files, before the rename
    assert {Path(p).name for p in staged if p.endswith(".arrow")} == {
        "samples.arrow",
        "allocations.arrow",
        "nodes.arrow",
    }
    assert any(p.endswith(".partial") for p in staged)
    assert synced[-1] == str(spool.directory)  # the rename itself made durable
    assert not list(spool.directory.glob(".*"))
    assert pl.from_arrow(Spool.read(kept).samples)["ts"].to_list()[0] == T0  # type: ignore[index]


def test_half_written_batches_a_crash_left_are_removed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.put(batch("GPU-a"))
    leftover = spool.directory / ".00000000000000000001-deadbeef.partial"
    leftover.mkdir()
    (leftover / "samples.arrow").write_bytes(b"ARROW1")
    spool.prepare()
    assert not leftover.exists() and len(spool.batches()) == 1


def test_collect_survives_a_torn_spool(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures: Path
) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.put(batch("GPU-spooled"))
    (torn,) = spool.batches()
    (torn / "samples.arrow").write_bytes((torn / "samples.arrow").read_bytes()[:200])
    monkeypatch.setenv("GPULEDGER_SPOOL_DIR", str(spool.directory))
    page = (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_bytes()
    root = tmp_path / "wh"
    for _ in range(2):  # every restart goes on storing
        with ExporterServer(page) as server:
            result = cli("collect", "--warehouse", str(root), "--dcgm-exporter", f"{server.url}/metrics", "--once")
        assert result.exit_code == 0, result.output
    assert Lake(root).scan(GPU_SAMPLES).collect().height == 16
    assert [p.name for p in spool.bad_dir.iterdir()] == [torn.name]


@pytest.mark.parametrize("layout", ["file", "under-a-file"])
def test_a_spool_path_that_cannot_be_a_folder_is_one_line(
    cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool should be")
    path = blocker if layout == "file" else blocker / "inner"
    monkeypatch.setenv("GPULEDGER_SPOOL_DIR", str(path))
    result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", "http://127.0.0.1:9", "--once")
    reason = "it is not a directory" if layout == "file" else f"{blocker} is not a directory"
    assert (result.exit_code, result.stderr) == (2, f"Error: spool {path} cannot be used: {reason}; {SPOOL_FIX}\n")
    assert not (tmp_path / "wh").exists()


def test_rows_round_trip_through_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1 << 30)
    rows = batch("GPU-a", range(5))
    spool.put(rows)
    (kept,) = spool.batches()
    back = Spool.read(kept)
    assert back.samples.equals(rows.samples)
    assert isinstance(back.allocations, pa.Table) and back.allocations.num_rows == 0
