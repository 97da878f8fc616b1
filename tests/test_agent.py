"""The node agent: buffering, flushing, spooling when the warehouse is gone, SIGTERM and kill -9, /metrics."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from collector.agent import NodeAgent, Spool
from collector.metrics import LiveMetrics, serve
from collector.nvml import NvmlSampler
from gpuledger import jobs
from tests.nvml_standin import CapturedNVML
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

REPO = Path(__file__).resolve().parent.parent


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def sampler(fixtures: Path) -> NvmlSampler:
    nvml = CapturedNVML(fixtures / "nvml-h200", utcnow, count=2)
    sampler = NvmlSampler(cluster="c1", node="gpu-node-1", nvml=nvml, clock=utcnow)
    sampler.open()
    return sampler


def stored(root: Path) -> pl.DataFrame:
    return Lake(root).scan(GPU_SAMPLES).collect()


def test_agent_samples_on_its_interval_and_flushes_everything(sampler: NvmlSampler, tmp_path: Path) -> None:
    root = tmp_path / "wh"
    agent = NodeAgent(
        sampler.read,
        lambda rows: jobs.ingest(Lake(root, create=True), rows),
        Spool(tmp_path / "spool", 1 << 30),
        interval_s=0.05,
        flush_every_s=0.2,
    )
    stats = agent.run(duration_s=0.6)
    assert 8 <= stats.samples_taken <= 14
    assert stats.flushes >= 3
    assert stored(root).height == 2 * stats.samples_taken
    assert stats.spooled_batches == 0


def test_a_gone_warehouse_spools_and_replays_exactly_once(sampler: NvmlSampler, tmp_path: Path) -> None:
    root = tmp_path / "wh"
    Lake(root, create=True)
    away = tmp_path / "wh-away"
    spool = Spool(tmp_path / "spool", 1 << 30)
    agent = NodeAgent(sampler.sample, lambda rows: jobs.ingest(Lake(root), rows), spool, interval_s=0.01)
    for _ in range(3):
        agent._sample_once(raise_errors=True)
    agent.flush()
    root.rename(away)
    root.write_text("the warehouse volume is gone")  # a real failure: the path is no longer a directory
    for _ in range(2):
        for _ in range(3):
            agent._sample_once(raise_errors=True)
        agent.flush()
    assert len(spool.batches()) == 2 and agent.stats.spooled_batches == 2
    root.unlink()
    away.rename(root)
    agent._sample_once(raise_errors=True)
    agent.flush()
    assert spool.batches() == []
    assert agent.stats.replayed_batches == 2
    assert stored(root).height == 2 * 10
    assert stored(root).select(pl.struct("gpu_uuid", "ts").is_unique().all()).item()


def test_the_spool_is_bounded_and_drops_the_oldest(sampler: NvmlSampler, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 40_000)
    for _ in range(12):
        spool.put(sampler.sample())
        time.sleep(0.002)
    kept = spool.batches()
    assert 0 < len(kept) < 12
    assert spool.size() <= 40_000 or len(kept) == 1
    assert all(Spool.read(b).samples.num_rows == 2 for b in kept)


AGENT_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from pathlib import Path
    from collector.nvml import NvmlSampler
    from gpuledger import jobs
    from gpuledger.settings import load_settings
    from tests.nvml_standin import CapturedNVML

    root, spool, log, flush = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
    clock = lambda: dt.datetime.now(dt.UTC)
    sampler = NvmlSampler(cluster="c1", node="n1", nvml=CapturedNVML(Path(sys.argv[5]), clock), clock=clock)
    sampler.open()
    settings = load_settings(None).model_copy(update={"flush_every_s": flush, "spool_dir": spool})
    out = log.open("a")

    def taken(rows):
        for sample in rows.sample_dicts():
            out.write(sample["ts"].isoformat() + "\\n")
        out.flush()

    stats = jobs.run_agent(root, sampler.read, settings, interval_s=0.05, on_sample=taken)
    print(json.dumps({"samples": stats.samples_taken, "stored": stats.rows_stored}))
    """
)


def start_agent(tmp_path: Path, fixtures: Path, flush_s: float) -> subprocess.Popen[str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    args = [str(tmp_path / "wh"), str(tmp_path / "spool"), str(tmp_path / "taken.log"), str(flush_s)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), *args, str(fixtures / "nvml-h200")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def wait_for_samples(log: Path, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the agent took fewer than {count} samples in {timeout_s} s")


def test_sigterm_flushes_the_buffer_before_exit(tmp_path: Path, fixtures: Path) -> None:
    proc = start_agent(tmp_path, fixtures, flush_s=3600.0)  # never flushes on its own
    wait_for_samples(tmp_path / "taken.log", 10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    report = json.loads(out)
    taken = set((tmp_path / "taken.log").read_text().split())
    assert report["samples"] == len(taken) >= 10
    stored_ts = {ts.isoformat() for ts in stored(tmp_path / "wh")["ts"]}
    assert stored_ts == taken


def test_kill_9_loses_at_most_one_flush_interval_and_a_restart_duplicates_nothing(
    tmp_path: Path, fixtures: Path
) -> None:
    flush_s = 0.3
    proc = start_agent(tmp_path, fixtures, flush_s=flush_s)
    wait_for_samples(tmp_path / "taken.log", 30)
    proc.kill()
    proc.wait(timeout=10)
    taken = sorted(dt.datetime.fromisoformat(t) for t in (tmp_path / "taken.log").read_text().split())
    kept = sorted(stored(tmp_path / "wh")["ts"].to_list())
    lost = [t for t in taken if t not in set(kept)]
    assert lost, "a kill -9 between flushes loses the buffer (else this test did not kill mid-buffer)"
    assert max(lost) - min(lost) <= dt.timedelta(seconds=flush_s + 0.2)
    assert all(t > kept[-1] for t in lost)  # only the newest, unflushed samples
    restart = start_agent(tmp_path, fixtures, flush_s=flush_s)
    wait_for_samples(tmp_path / "taken.log", len(taken) + 10)
    restart.send_signal(signal.SIGTERM)
    out, err = restart.communicate(timeout=30)
    assert restart.returncode == 0, err
    again = stored(tmp_path / "wh")
    assert again.select(pl.struct("gpu_uuid", "mig_instance_id", "ts").is_unique().all()).item()
    assert again.height == len(kept) + json.loads(out)["samples"]


def test_metrics_endpoint_serves_dcgm_names(sampler: NvmlSampler) -> None:
    live = LiveMetrics()
    rows = sampler.sample()
    live.update(rows)
    server = serve(live, 0, "127.0.0.1")
    try:
        body = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    first = rows.samples.to_pylist()[0]
    served = {
        (s.name, s.labels["UUID"]): (s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    labels, util = served[("DCGM_FI_DEV_GPU_UTIL", first["gpu_uuid"])]
    assert labels == {
        "gpu": "0",
        "UUID": first["gpu_uuid"],
        "device": "nvidia0",
        "modelName": "NVIDIA H200",
        "Hostname": "gpu-node-1",
    }
    assert util == first["util_pct"]
    assert served[("DCGM_FI_DEV_FB_USED", first["gpu_uuid"])][1] == first["fb_used_bytes"] / (1 << 20)
    assert served[("DCGM_FI_DEV_POWER_USAGE", first["gpu_uuid"])][1] == pytest.approx(first["power_w"])
    assert served[("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", first["gpu_uuid"])][1] == pytest.approx(
        first["energy_j"] * 1000
    )
    # prometheus_client names the counter family `..._total` in its TYPE line; the series keeps dcgm-exporter's name.
    assert "\nDCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{" in body


def test_collect_once_without_nvml_is_one_line(cli, tmp_path: Path) -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--once")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: NVML is not available (")


def test_metrics_endpoint_round_trips_through_the_dcgm_reader(fixtures: Path) -> None:
    """What the agent serves on /metrics is what gpuledger's dcgm-exporter reader reads back, MIG included."""
    from collector.dcgm import DcgmExporterReader

    nvml = CapturedNVML(fixtures / "nvml-h200", utcnow, count=2, mig=["3g.71gb", "3g.71gb"])
    sampler = NvmlSampler(cluster="c1", node="gpu-node-1", nvml=nvml, clock=utcnow)
    sampler.open()
    live = LiveMetrics()
    rows = sampler.sample()
    live.update(rows)
    server = serve(live, 0, "127.0.0.1")
    try:
        back = DcgmExporterReader(f"http://127.0.0.1:{server.server_port}", cluster="c1").read()
    finally:
        server.shutdown()
    key = ["gpu_uuid", "mig_instance_id"]
    columns = [*key, "gpu_index", "mig_profile", "gpu_model", "node", "util_pct", "fb_used_bytes", "power_w"]
    sent = pl.from_arrow(rows.samples).select(columns).sort(key, nulls_last=True)
    got = pl.from_arrow(back.samples).select(columns).sort(key, nulls_last=True)
    assert got.height == 6
    assert got.drop("power_w").equals(sent.drop("power_w"))
    assert got["power_w"].to_list() == pytest.approx(sent["power_w"].to_list(), nan_ok=True)


def test_collect_once_from_a_dcgm_exporter(cli, tmp_path: Path, fixtures: Path) -> None:
    import http.server
    import threading

    body = (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_bytes()

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", url, "--once")
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    assert "collected 1 samples" in result.stderr
    lake = Lake(tmp_path / "wh")
    samples = lake.scan(GPU_SAMPLES).collect()
    assert samples.height == 8 and set(samples["source"]) == {"dcgm-exporter"}
    assert samples["gpu_model"].unique().to_list() == ["NVIDIA H100 80GB HBM3"]


def test_collect_refuses_two_sources(cli, tmp_path: Path) -> None:
    result = cli("collect", "--warehouse", str(tmp_path), "--source", "nvml", "--dcgm-exporter", "http://x:9400")
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: --source nvml and --dcgm-exporter URL are alternatives: pass one\n",
    )
