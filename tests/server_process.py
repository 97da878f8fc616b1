"""A real ``gpuledger server`` process for tests, on a small simulated warehouse, and what it serves."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gpuledger import jobs
from gpuledger.settings import Settings
from warehouse.lake import Lake

START_TIMEOUT_S = 90.0
GRACE_S = 30.0
"""Kubernetes' default terminationGracePeriodSeconds: a SIGTERM'd server exits within it."""
SIM_END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)


def gpuledger() -> list[str]:
    script = Path(sys.executable).parent / "gpuledger"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpuledger.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    return {**env, **extra}


def simulated(root: Path) -> Path:
    """16 GPUs x 2 days ending at SIM_END, simulated into ``root``."""
    jobs.simulate(Lake(root, create=True), Settings(), gpus=16, days=2, seed=7, end=SIM_END)
    return root


@pytest.fixture(scope="session")
def sim_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulated(tmp_path_factory.mktemp("server-sim") / "wh")


@pytest.fixture
def warehouse(sim_template: Path, tmp_path: Path) -> Path:
    """A copy of the simulated warehouse the test's server may write to."""
    root = tmp_path / "wh"
    shutil.copytree(sim_template, root)
    return root


class ServerProcess:
    def __init__(self, args: list[str], cwd: Path, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.log = cwd / f"server-{port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*gpuledger(), "server", "--port", str(port), *args],
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def wait_for(self, path: str, status: int = 200, timeout_s: float = START_TIMEOUT_S) -> requests.Response:
        """Poll ``path`` until it answers ``status`` (fails with the server's log when it exits or never does)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}: {self.output()[-3000:]}")
            try:
                answer = self.get(path)
                if answer.status_code == status:
                    return answer
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"{path} did not answer {status} within {timeout_s:g} s: {self.output()[-3000:]}")

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """/metrics, parsed: (sample name, sorted labels) -> value."""
        text = self.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=GRACE_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
