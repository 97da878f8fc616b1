"""Live node agents on loopback for tests: `gpuledger collect --no-warehouse` processes over the NVML stand-in
(``tests/nvml_standin.py``, the real H200 capture), and a real Prometheus that scrapes them.

Each agent is its own process, as on a cluster's nodes: ``jobs.run_exporter`` serving ``/metrics`` on its own port,
its GPUs with UUIDs no other agent has (``uuid_offset``). Prometheus gets a scrape config written here (the agents as
static targets, ``honor_labels`` as the PodMonitor in deploy/ sets it) and scrapes every ``scrape_interval_s``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.prometheus_server import PrometheusServer, free_port

REPO = Path(__file__).resolve().parent.parent
CAPTURE = REPO / "tests" / "fixtures" / "nvml-h200"

AGENT_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from collector.nvml import NvmlSampler
    from gpuledger import jobs
    from tests.nvml_standin import CapturedNVML

    node, gpus, offset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    port, interval = int(sys.argv[4]), float(sys.argv[5])
    clock = lambda: dt.datetime.now(dt.UTC)
    nvml = CapturedNVML(Path(sys.argv[6]), clock, count=gpus, uuid_offset=offset)
    sampler = NvmlSampler(cluster="c1", node=node, nvml=nvml, clock=clock)
    sampler.open()
    served = lambda addr, port: print(f"serving {addr}:{port}", flush=True)
    taken = jobs.run_exporter(sampler.read, interval_s=interval, metrics_port=port, on_serving=served)
    print(f"taken {taken}", flush=True)
    """
)


@dataclass
class Agent:
    node: str
    gpus: int
    port: int
    process: subprocess.Popen[str]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_agents(tmp_path: Path, gpus: list[int], *, interval_s: float = 0.25) -> list[Agent]:
    """One agent process per entry of ``gpus`` (its GPU count), each answering /metrics before this returns."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agents: list[Agent] = []
    offset = 0
    for i, count in enumerate(gpus):
        port = free_port()
        args = [f"gpu-node-{i}", str(count), str(offset), str(port), str(interval_s), str(CAPTURE)]
        process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        agents.append(Agent(f"gpu-node-{i}", count, port, process))
        offset += count
    for agent in agents:
        _wait_serving(agent)
    return agents


def _wait_serving(agent: Agent, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            out = agent.process.stdout.read() if agent.process.stdout else ""
            raise RuntimeError(f"agent {agent.node} exited with {agent.process.returncode}: {out[-2000:]}")
        try:
            page = requests.get(agent.metrics_url, timeout=1).text
            if "DCGM_FI_DEV_GPU_UTIL{" in page:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    agent.stop()
    raise RuntimeError(f"agent {agent.node} served no GPU sample within {timeout_s:g} s")


def scraping_prometheus(tmp_path: Path, agents: list[Agent], *, scrape_interval_s: int = 1) -> PrometheusServer:
    """A real Prometheus (not started) whose scrape config names the agents, as a cluster's Prometheus would."""
    targets = ", ".join(f'"{a.target}"' for a in agents)
    config = (
        f"global:\n  scrape_interval: {scrape_interval_s}s\n  evaluation_interval: {scrape_interval_s}s\n"
        "scrape_configs:\n"
        "  - job_name: gpuledger-agent\n"
        "    honor_labels: true\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    data = tmp_path / "prometheus-data"
    data.mkdir()
    return PrometheusServer(data, config_text=config)
