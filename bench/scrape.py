"""Benchmark 5: points/s of ``PrometheusScraper.scrape`` from a real Prometheus against a raw HTTP download.

A history of ``gpus`` GPUs (8 per node, the ten DCGM fields the scraper reads, dcgm-exporter's label set, every
fourth GPU held by a pod, plus kube-state-metrics node and pod series) is backfilled with ``promtool`` and served
by the ``prometheus`` binary (Debian package ``prometheus``). Both sides send the very same
``/api/v1/query_range`` requests, in the same order, to the same server: the scraper (HTTP, JSON, DCGM mapping,
kube-state-metrics attribution, warehouse append and watermark, into a fresh warehouse each repeat) against
``requests.get(...).content`` of each of those requests, one after another, the least any client must do to have
the bytes. The scraper keeps two queries under way at once (``prometheus_queries_in_flight``), so the same raw
download two at a time is measured too (``scrape_points_per_s_vs_in_flight``, no target): how far the scraper is
from the bytes when both sides ask alike. Each side takes the best of ``repeats`` runs, interleaved, so a busy
neighbour hurts all alike.
"""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from bench.common import Progress, Result, Target
from collector.prometheus.client import PrometheusClient
from collector.prometheus.scraper import DCGM_METRICS, PrometheusScraper
from gpuledger.jobs import scrape_store
from warehouse.lake import Lake

TARGET_RATIO = 0.8
IN_FLIGHT = 2
"""As `prometheus_queries_in_flight` defaults."""
STEP_S = 60
GPUS_PER_NODE = 8
ENDS_BEFORE_NOW_S = 15 * 60


def write_history(path: Path, *, gpus: int, hours: int, end: int) -> int:
    """OpenMetrics history for ``gpus`` GPUs sampled every STEP_S over ``hours`` ending at ``end``; returns the
    number of DCGM samples written."""
    times = range(end - hours * 3600 + STEP_S, end + 1, STEP_S)
    labels = [_gpu_labels(g) for g in range(gpus)]
    written = 0
    with path.open("w") as out:
        for m, name in enumerate(DCGM_METRICS):
            out.write(f"# TYPE {name} gauge\n")
            for g, text in enumerate(labels):
                for i, t in enumerate(times):
                    out.write(f"{name}{{{text}}} {_value(m, g, i)} {t}\n")
                    written += 1
        nodes = range((gpus + GPUS_PER_NODE - 1) // GPUS_PER_NODE)
        out.write("# TYPE kube_node_labels gauge\n")
        for n in nodes:
            node = (
                f'node="gpu-node-{n}",label_node_kubernetes_io_instance_type="p5.48xlarge",'
                f'label_karpenter_sh_capacity_type="{"spot" if n % 2 else "on-demand"}",'
                'label_topology_kubernetes_io_region="us-east-1",label_topology_kubernetes_io_zone="us-east-1a",'
                'job="kube-state-metrics",instance="10.0.3.4:8080"'
            )
            out.writelines(f"kube_node_labels{{{node}}} 1 {t}\n" for t in times)
        pods = [(g, f"trainer-{g}-7d9f8b6c5d-x2k4q") for g in range(0, gpus, 4)]
        out.write("# TYPE kube_pod_owner gauge\n")
        for g, pod in pods:
            owner = (
                f'namespace="team-{g % 3}",pod="{pod}",owner_kind="ReplicaSet",owner_name="trainer-{g}-7d9f8b6c5d",'
                'owner_is_controller="true",job="kube-state-metrics",instance="10.0.3.4:8080"'
            )
            out.writelines(f"kube_pod_owner{{{owner}}} 1 {t}\n" for t in times)
        out.write("# EOF\n")
    return written


def _gpu_labels(g: int) -> str:
    node, index = divmod(g, GPUS_PER_NODE)
    text = (
        f'gpu="{index}",UUID="GPU-{g:08x}-69c4-b61d-e0bc-7b2460096005",pci_bus_id="00000000:{index:02X}:00.0",'
        f'device="nvidia{index}",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-{node}",'
        'DCGM_FI_DRIVER_VERSION="580.105.08",instance="10.0.172.246:9400",job="nvidia-dcgm-exporter"'
    )
    if g % 4 == 0:
        text += f',container="main",namespace="team-{g % 3}",pod="trainer-{g}-7d9f8b6c5d-x2k4q",pod_uid=""'
    return text


def _value(metric: int, g: int, i: int) -> str:
    if metric in (1, 2):  # PROF_* ratios
        return str(((i + g) % 5) / 4)
    return str(float((i * 7 + g * 13 + metric) % 101))


def run(*, gpus: int, hours: int, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    from tests.prometheus_server import PROMETHEUS, PROMTOOL, PrometheusServer, create_blocks

    if PROMETHEUS is None or PROMTOOL is None:
        progress.note(
            "scrape: skipped, the prometheus and promtool binaries are not installed (apt-get install prometheus)"
        )
        return []
    end = int(time.time() // STEP_S) * STEP_S - ENDS_BEFORE_NOW_S
    root = Path(tempfile.mkdtemp(dir=workdir, prefix="scrape-"))
    with progress.step(f"scrape: backfilling {gpus} GPUs x {hours} h into Prometheus"):
        samples = write_history(root / "history.om", gpus=gpus, hours=hours, end=end)
        create_blocks(root / "history.om", root / "tsdb")
        (root / "history.om").unlink()
    server = PrometheusServer(root / "tsdb").start()
    try:
        ours, bare, bare_in_flight, points = _measure(server.url, end, hours, root, progress, repeats)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    progress.note(
        f"scrape: {points:,} points ({samples:,} DCGM samples); scraper runs "
        + ", ".join(f"{t:.2f}" for t in ours)
        + " s; raw download runs "
        + ", ".join(f"{t:.2f}" for t in bare)
        + f" s; raw download {IN_FLIGHT} at a time "
        + ", ".join(f"{t:.2f}" for t in bare_in_flight)
        + " s"
    )
    note = f"{gpus} GPUs x {hours} h at {STEP_S} s, best of {repeats}; baseline: requests.get of the same queries"
    return [
        Result(
            "scrape_points_per_s",
            points / min(ours),
            "points/s",
            baseline=points / min(bare),
            target=Target(">=", TARGET_RATIO, on="ratio"),
            note=note,
        ),
        Result(
            "scrape_points_per_s_vs_in_flight",
            points / min(ours),
            "points/s",
            baseline=points / min(bare_in_flight),
            note=f"the same; baseline: the same requests.get, {IN_FLIGHT} under way at once as the scraper keeps them",
        ),
    ]


class _Recording(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, str]]] = []

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append((str(args[1]), dict(kwargs.get("params") or {})))
        return super().request(*args, **kwargs)


def _measure(
    url: str, end: int, hours: int, root: Path, progress: Progress, repeats: int
) -> tuple[list[float], list[float], list[float], int]:
    start_dt = dt.datetime.fromtimestamp(end - hours * 3600 + STEP_S, dt.UTC)
    end_dt = dt.datetime.fromtimestamp(end + STEP_S, dt.UTC)
    ours: list[float] = []
    bare: list[float] = []
    bare_in_flight: list[float] = []
    points = 0
    with progress.step(f"scrape: scraper vs raw download, best of {repeats}") as update:
        for i in range(repeats):
            session = _Recording()
            lake = Lake(root / f"wh-{i}", create=True)
            client = PrometheusClient(url, session=session, env={})
            scraper = PrometheusScraper(
                client,
                cluster="bench",
                store=scrape_store(lake),
                read_state=lake.read_state,
                step_s=STEP_S,
                chunk_s=86_400,
                in_flight=IN_FLIGHT,
            )
            started = time.perf_counter()
            result = scraper.scrape(start_dt, end_dt)
            ours.append(time.perf_counter() - started)
            points = result.points
            shutil.rmtree(root / f"wh-{i}", ignore_errors=True)
            raw = requests.Session()
            started = time.perf_counter()
            for target, params in session.sent:
                response = raw.get(target, params=params, timeout=120)
                response.raise_for_status()
                _ = response.content
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            with ThreadPoolExecutor(IN_FLIGHT) as pool:
                list(pool.map(functools.partial(_download, raw), *zip(*session.sent, strict=True)))
            bare_in_flight.append(time.perf_counter() - started)
            update(
                f"repeat {i + 1}/{repeats}: scraper {ours[-1]:.2f} s, raw {bare[-1]:.2f} s, "
                f"raw {IN_FLIGHT} at a time {bare_in_flight[-1]:.2f} s"
            )
    return ours, bare, bare_in_flight, points


def _download(session: requests.Session, target: str, params: dict[str, str]) -> bytes:
    response = session.get(target, params=params, timeout=120)
    response.raise_for_status()
    return response.content
