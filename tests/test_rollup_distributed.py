"""The minute rollup's (date, cluster) partitions as tasks on a real Dask cluster: a scheduler and two worker
processes started here (`dask scheduler`, `dask worker`), driven through `gpuledger warehouse rollup --scheduler`.
The parts it commits are the single-process rollup's, byte for byte; a second run is a no-op; a scheduler that does
not answer, one killed while the tasks wait on it, and a task that fails on a worker, end in one line and leave the
warehouse as it was."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import Result

from gpuledger import distributed_rollup
from gpuledger.settings import Settings
from warehouse.lake import Lake
from warehouse.rollup import summary_table
from warehouse.schema import GPU_MINUTES, GPU_SAMPLES, Table

Cli = Callable[..., Result]
DASK = Path(sys.executable).with_name("dask")
START_S = 90.0
THRESHOLD = "GPULEDGER_ACTIVE_THRESHOLD_PCT"
"""Changed before each rollup here, so every partition's minutes are recomputed."""


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a Dask scheduler with two single-threaded worker processes, all on loopback."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    scheduler_file = str(folder / "scheduler.json")

    processes = [_start_scheduler(folder)]
    try:
        worker = ["worker", "--scheduler-file", scheduler_file, "--nworkers", "1", "--nthreads", "1"]
        processes += [_start(folder, name, *worker, "--name", name, "--memory-limit", "4GiB") for name in ("w1", "w2")]
        with Client(scheduler_file=scheduler_file, timeout=START_S) as client:
            client.wait_for_workers(2, timeout=START_S)
            address = client.scheduler.address
        yield address
    finally:
        _stop(processes)


def _start(folder: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("wb")
    return subprocess.Popen([str(DASK), *args, "--no-dashboard"], cwd=folder, stdout=subprocess.DEVNULL, stderr=log)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _start_scheduler(folder: Path) -> subprocess.Popen[bytes]:
    """``dask scheduler`` on a free loopback port, once it has written ``scheduler.json``."""
    scheduler_file = folder / "scheduler.json"
    loopback = ["--host", "127.0.0.1", "--port", "0"]
    process = _start(folder, "scheduler", "scheduler", *loopback, "--scheduler-file", str(scheduler_file))
    deadline = time.monotonic() + START_S
    while not scheduler_file.exists():
        assert time.monotonic() < deadline, (folder / "scheduler.log").read_text()
        time.sleep(0.1)
    return process


def _ran_rollup_tasks(address: str) -> dict[str, int]:
    """Per worker, how many rollup tasks its log names."""
    from distributed import Client

    def count(dask_worker: Any) -> int:
        return len({entry[0] for entry in dask_worker.state.log if str(entry[0]).startswith("rollup-")})

    with Client(address, timeout=START_S) as client:
        return client.run(count)


def _tables() -> list[Table]:
    """The rollup's tables: the minutes and every daily summary the settings keep."""
    return [GPU_MINUTES, *(summary_table(summary) for summary in Settings().summaries.all())]


def _visible(lake: Lake) -> dict[str, bytes]:
    """Every visible part of the rollup's tables: its path in the warehouse and its bytes."""
    return {str(p.relative_to(lake.root)): p.read_bytes() for table in _tables() for p in lake.parts(table)}


def _copy(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def test_distributed_rollup_commits_the_single_process_parts_byte_for_byte(
    sim_warehouse: Path, tmp_path: Path, cli: Cli, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = _copy(sim_warehouse, tmp_path / "here"), _copy(sim_warehouse, tmp_path / "there")
    before = _visible(Lake(here))
    monkeypatch.setenv(THRESHOLD, "12.5")

    local = cli("warehouse", "rollup", "--warehouse", str(here))
    remote = cli("warehouse", "rollup", "--warehouse", str(there), "--scheduler", scheduler)

    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    summary = [line for line in local.output.splitlines() if line.startswith("rollup:")]
    assert summary == [line for line in remote.output.splitlines() if line.startswith("rollup:")]
    computed = int(summary[0].split()[1])
    assert computed == len(Lake(here).partitions(GPU_MINUTES)) > 1, summary
    ours, theirs = _visible(Lake(here)), _visible(Lake(there))
    assert ours.keys() != before.keys(), "the new threshold changed every minute part's name"
    assert ours.keys() == theirs.keys()
    different = [path for path in ours if ours[path] != theirs[path]]
    assert not different, f"{len(different)} of {len(ours)} parts differ, first {different[:3]}"
    staged = list((there / "_tmp").glob("*.parquet"))
    assert all(p.stat().st_nlink > 1 for p in staged), "every part a worker staged was committed"

    assert all(_ran_rollup_tasks(scheduler).values()), "both workers ran partitions"

    again = cli("warehouse", "rollup", "--warehouse", str(there), "--scheduler", scheduler)
    assert again.exit_code == 0, again.output
    assert f"rollup: 0 partitions computed, {computed} up to date, 0 removed" in again.output
    assert _visible(Lake(there)) == theirs


def test_a_scheduler_that_does_not_answer_is_one_line_and_writes_nothing(
    sim_warehouse: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(sim_warehouse, tmp_path / "wh")
    before = _visible(Lake(root))
    monkeypatch.setattr(distributed_rollup, "CONNECT_TIMEOUT_S", 2.0)
    monkeypatch.setenv(THRESHOLD, "12.5")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there

    result = cli("warehouse", "rollup", "--warehouse", str(root), "--scheduler", address)

    assert result.exit_code == 2, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: no Dask scheduler answered at {address} within 2 s"), line
    assert "leave --scheduler out to roll up here" in line
    assert "Traceback" not in result.output
    assert _visible(Lake(root)) == before


def test_a_task_that_fails_on_a_worker_names_the_damage_and_keeps_the_warehouse(
    sim_warehouse: Path, tmp_path: Path, cli: Cli, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _copy(sim_warehouse, tmp_path / "wh")
    lake = Lake(root)
    part = lake.parts(GPU_SAMPLES)[0]
    _damage_a_data_page(part)
    before = _visible(lake)
    monkeypatch.setenv(THRESHOLD, "12.5")

    result = cli("warehouse", "rollup", "--warehouse", str(root), "--scheduler", scheduler)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: corrupt Parquet part {part} ("), line
    after = _visible(Lake(root))
    untouched = {path: data for path, data in before.items() if path in after}
    assert untouched == {path: after[path] for path in untouched}, "no committed part changed"
    with Lake(root).writing():  # the lock was let go
        pass


def _damage_a_data_page(part: Path) -> None:
    """Flip one byte in the middle of the part's largest column chunk: its page CRC no longer matches."""
    meta = pq.read_metadata(part)
    chunk = max(
        (meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)),
        key=lambda chunk: chunk.total_compressed_size,
    )
    data = bytearray(part.read_bytes())
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x04
    os.chmod(part, 0o644)
    part.write_bytes(bytes(data))


def test_a_scheduler_without_workers_is_given_up_on_in_one_line(
    sim_warehouse: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client

    root = _copy(sim_warehouse, tmp_path / "wh")
    before = _visible(Lake(root))
    folder = tmp_path / "lonely"
    folder.mkdir()
    process = _start_scheduler(folder)
    try:
        with Client(scheduler_file=str(folder / "scheduler.json"), timeout=START_S) as client:
            address = client.scheduler.address
        monkeypatch.setattr(distributed_rollup, "NO_WORKERS_S", 2.0)
        monkeypatch.setattr(distributed_rollup, "POLL_S", 0.5)
        monkeypatch.setenv(THRESHOLD, "12.5")

        result = cli("warehouse", "rollup", "--warehouse", str(root), "--scheduler", address)
    finally:
        _stop([process])

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: the Dask scheduler at {address} has had no workers for 2 s"), line
    assert _visible(Lake(root)) == before
    with Lake(root).writing():
        pass


def test_a_scheduler_killed_mid_rollup_is_one_line_and_the_rollup_runs_again(
    sim_warehouse: Path, tmp_path: Path, cli: Cli, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rollup's tasks are on a scheduler (one without workers, so none has run) when it is killed: the command
    ends in one line and writes nothing, and the next run, on a scheduler with workers, does every partition."""
    from distributed import Client

    root = _copy(sim_warehouse, tmp_path / "wh")
    before = _visible(Lake(root))
    folder = tmp_path / "doomed"
    folder.mkdir()
    process = _start_scheduler(folder)
    monkeypatch.setattr(distributed_rollup, "POLL_S", 0.5)
    monkeypatch.setenv(THRESHOLD, "12.5")
    outcome: list[Result] = []
    try:
        with Client(scheduler_file=str(folder / "scheduler.json"), timeout=START_S) as client:
            address = client.scheduler.address
            rollup = threading.Thread(
                target=lambda: outcome.append(
                    cli("warehouse", "rollup", "--warehouse", str(root), "--scheduler", address)
                )
            )
            rollup.start()
            deadline = time.monotonic() + START_S
            while not client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)):
                assert time.monotonic() < deadline and rollup.is_alive(), "the rollup never sent its tasks"
                time.sleep(0.1)
        process.kill()
        rollup.join(timeout=START_S)
    finally:
        _stop([process])

    assert not rollup.is_alive(), "the rollup kept waiting for a scheduler that was killed"
    [result] = outcome
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: the Dask scheduler at {address} went away mid-rollup"), line
    assert "the partitions committed so far are kept; run the rollup again" in line
    assert _visible(Lake(root)) == before

    again = cli("warehouse", "rollup", "--warehouse", str(root), "--scheduler", scheduler)
    assert again.exit_code == 0, again.output
    computed = len(Lake(root).partitions(GPU_MINUTES))
    assert f"rollup: {computed} partitions computed, 0 up to date" in again.output
