"""Shared fixtures: real warehouses on disk, the captured fixture files, and the CLI as a user runs it."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

from gpuledger.cli import main
from gpuledger.settings import Settings, load_settings
from tests.demo_fleet import Demo, build_demo
from tests.kubelet import serve, socket_dir  # noqa: F401  (fixtures: a real kubelet pod-resources socket)
from warehouse.lake import Lake

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
"""Real captures and reference files, copied unmodified, each folder with its SOURCES.md."""
T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo fleet and its recommendations (``tests.demo_fleet``), shared by every test module that reads them."""
    return build_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """A fresh, empty warehouse in tmp_path."""
    return Lake(tmp_path / "wh", create=True)


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("GPULEDGER_"):
            monkeypatch.delenv(name)
    return load_settings(None)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `gpuledger ARGS...` in-process, as a user would, with stdout and stderr kept apart."""
    for name in list(os.environ):
        if name.startswith("GPULEDGER_"):
            monkeypatch.delenv(name)

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def sim_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated fleet (16 GPUs x 3 days), built once per test session through the CLI."""
    root = tmp_path_factory.mktemp("sim") / "wh"
    result = CliRunner().invoke(
        main, ["simulate", "--warehouse", str(root), "--gpus", "16", "--days", "3", "--end", "2026-11-20"]
    )
    assert result.exit_code == 0, result.output
    return root


def sample_rows(
    gpu: str = "GPU-a",
    minutes: range = range(10),
    *,
    start: dt.datetime = T0,
    interval_s: int = 60,
    util: float | list[float] = 50.0,
    fb_used: int = 2 << 30,
    cluster: str = "c1",
    node: str = "node-1",
    sm_active: float | None = None,
) -> pa.Table:
    """A hand-made gpu_samples batch: one GPU sampled every ``interval_s`` seconds at the given steps."""
    ts = [start + dt.timedelta(seconds=interval_s * i) for i in minutes]
    utils = util if isinstance(util, list) else [util] * len(ts)
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "cluster": [cluster] * n,
            "node": [node] * n,
            "gpu_uuid": [gpu] * n,
            "gpu_index": pa.array([0] * n, pa.int32()),
            "gpu_model": ["NVIDIA H200"] * n,
            "util_pct": pa.array(utils, pa.float32()),
            "sm_active": pa.array([sm_active] * n, pa.float32()),
            "fb_used_bytes": [fb_used] * n,
            "fb_total_bytes": [150754820096] * n,
            "power_w": pa.array([300.0] * n, pa.float32()),
            "source": ["nvml"] * n,
        }
    )


def allocation_rows(
    gpu: str = "GPU-a",
    minutes: range = range(10),
    *,
    start: dt.datetime = T0,
    interval_s: int = 60,
    namespace: str = "team-a",
    pod: str = "trainer-7d9f8b6c5d-x2k4q",
    workload: str = "trainer",
    cluster: str = "c1",
) -> pa.Table:
    ts = [start + dt.timedelta(seconds=interval_s * i) for i in minutes]
    n = len(ts)
    return pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "cluster": [cluster] * n,
            "node": ["node-1"] * n,
            "gpu_uuid": [gpu] * n,
            "namespace": [namespace] * n,
            "pod": [pod] * n,
            "container": ["main"] * n,
            "workload": [workload] * n,
            "source": ["nvml"] * n,
        }
    )


@pytest.fixture
def wh(sim_warehouse: Path, tmp_path: Path) -> Lake:
    """A private copy of the simulated fleet (the outbox and alert state are written into the warehouse)."""
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    return Lake(root)
