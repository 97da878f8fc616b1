"""The node agent's own identity series on ``/metrics`` (``gpuledger_node_info``, ``gpuledger_pod_owner``,
``gpuledger_pod_requests``; collector/metrics.py) and the scrape reading them back where kube-state-metrics' series
are missing (collector/prometheus/kube_state.py), kube-state-metrics winning where both exist.

End to end: an agent loop (``jobs.run_exporter``) serving rows built here (a node with an instance type and a
capacity type, GPU pods with owners and requests, as the agent reads them from its Node object and its kubelet's pod
list), a real Prometheus scraping it with ``honor_labels`` every second, and the scraper over that Prometheus into
a real warehouse, with no kube-state-metrics series anywhere.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from collector.dcgm import DcgmPoint, rows_from_points
from collector.metrics import LiveMetrics, serve
from collector.prometheus.client import PrometheusClient
from collector.prometheus.kube_state import KubeState, kube_rows, node_rows
from collector.prometheus.scraper import PrometheusScraper
from collector.prometheus.series import Series
from collector.rows import Records, Rows
from gpuledger import jobs
from gpuledger.jobs import scrape_store
from tests.prometheus_server import PrometheusServer, free_port, require_binaries
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, NODES

CLUSTER = "c1"
NODE = "ip-10-0-172-246.ec2.internal"
H100 = "NVIDIA H100 80GB HBM3"
UUID_0 = "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005"
UUID_1 = "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a"
PROVIDER_ID = "aws:///us-east-1a/i-0abc1234def567890"
TRAINER = "trainer-7d9f8b6c5d-x2k4q"
TRAINER_CHAIN = "Pod<-ReplicaSet/trainer-7d9f8b6c5d<-Deployment/trainer"
TRAINER_MEMORY = 16 * 2**30 + 256 * 2**20
WORKER = "llama-ft-worker-0"
T0 = dt.datetime(2024, 11, 2, 12, 0, tzinfo=dt.UTC)


def node_record(**overrides: Any) -> dict[str, Any]:
    """The agent's ``nodes`` row, as its Node object describes it."""
    return {
        "date": T0.date(),
        "cluster": CLUSTER,
        "node": NODE,
        "instance_type": "p5.48xlarge",
        "capacity_type": "spot",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "gpu_model": H100,
        "gpu_count": 8,
        "mig_strategy": "none",
        "labels": '{"karpenter.sh/capacity-type":"spot"}',
        "provider_id": PROVIDER_ID,
    } | overrides


def sample_record(ts: dt.datetime, uuid: str, index: int) -> dict[str, Any]:
    return {
        "ts": ts,
        "cluster": CLUSTER,
        "node": NODE,
        "gpu_uuid": uuid,
        "gpu_index": index,
        "gpu_model": H100,
        "util_pct": 40.0 + index,
        "fb_used_bytes": 2**30,
        "fb_total_bytes": 80 * 2**30,
        "power_w": 300.0,
        "energy_j": 1000.0,
        "temp_c": 40.0,
        "sm_clock_mhz": 1980,
        "source": "nvml",
    }


def allocation_record(ts: dt.datetime, uuid: str, pod: str, **facts: Any) -> dict[str, Any]:
    return {
        "ts": ts,
        "cluster": CLUSTER,
        "node": NODE,
        "gpu_uuid": uuid,
        "namespace": "team-a" if pod == TRAINER else "research",
        "pod": pod,
        "container": "main",
        "source": "nvml",
        **facts,
    }


def agent_rows(ts: dt.datetime, *, worker_holds: bool = True) -> Rows:
    """Two GPUs of one node: GPU 0 held by a Deployment's pod (owner and both requests known), GPU 1 by a PyTorchJob's
    pod (CPU request only) unless ``worker_holds`` is false."""
    allocations = [
        allocation_record(
            ts,
            UUID_0,
            TRAINER,
            workload="trainer",
            owner_kind="Deployment",
            owner_name="trainer",
            owner_chain=TRAINER_CHAIN,
            cpu_request=4.25,
            memory_request_bytes=TRAINER_MEMORY,
        )
    ]
    if worker_holds:
        allocations.append(
            allocation_record(
                ts,
                UUID_1,
                WORKER,
                workload="llama-ft",
                owner_kind="PyTorchJob",
                owner_name="llama-ft",
                owner_chain="Pod<-PyTorchJob/llama-ft",
                cpu_request=8.0,
            )
        )
    samples = [sample_record(ts, UUID_0, 0), sample_record(ts, UUID_1, 1)]
    return Rows.from_records(samples, allocations, [node_record()])


def served(live: LiveMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    server = serve(live, 0)
    try:
        body = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


# ----------------------------------------------------------------------------------------------------- /metrics


def test_metrics_carry_the_node_and_the_gpu_pods_owners_and_requests() -> None:
    live = LiveMetrics()
    live.update(agent_rows(T0))
    page = served(live)
    assert page["gpuledger_node_info"] == [
        (
            {
                "node": NODE,
                "instance_type": "p5.48xlarge",
                "capacity_type": "spot",
                "region": "us-east-1",
                "zone": "us-east-1a",
                "provider_id": PROVIDER_ID,
                "gpu_count": "8",
                "mig_strategy": "none",
            },
            1.0,
        )
    ]
    assert sorted(page["gpuledger_pod_owner"], key=lambda s: s[0]["pod"]) == [
        (
            {
                "namespace": "research",
                "pod": WORKER,
                "owner_kind": "PyTorchJob",
                "owner_name": "llama-ft",
                "owner_chain": "Pod<-PyTorchJob/llama-ft",
            },
            1.0,
        ),
        (
            {
                "namespace": "team-a",
                "pod": TRAINER,
                "owner_kind": "Deployment",
                "owner_name": "trainer",
                "owner_chain": TRAINER_CHAIN,
            },
            1.0,
        ),
    ]
    requested = {(s[0]["pod"], s[0]["resource"]): s[1] for s in page["gpuledger_pod_requests"]}
    assert requested == {(TRAINER, "cpu"): 4.25, (TRAINER, "memory"): float(TRAINER_MEMORY), (WORKER, "cpu"): 8.0}
    assert {s[0]["namespace"] for s in page["gpuledger_pod_requests"]} == {"team-a", "research"}
    # dcgm-exporter's series are as before: the pod labels on the GPU each pod holds, nothing more
    util = {labels["UUID"]: labels for labels, _ in page["DCGM_FI_DEV_GPU_UTIL"]}
    assert util[UUID_0] == {
        "UUID": UUID_0,
        "gpu": "0",
        "device": "nvidia0",
        "modelName": H100,
        "Hostname": NODE,
        "pod": TRAINER,
        "namespace": "team-a",
        "container": "main",
    }


def test_a_pod_that_stops_holding_a_gpu_drops_out_and_null_labels_are_left_out() -> None:
    live = LiveMetrics()
    live.update(agent_rows(T0))
    later = T0 + dt.timedelta(days=1)
    newer_node = node_record(date=later.date(), zone=None, provider_id=None, mig_strategy=None)
    rows = agent_rows(later, worker_holds=False)
    live.update(Rows(rows.samples, rows.allocations, Rows.from_records(nodes=[newer_node]).nodes))
    page = served(live)
    assert [labels["pod"] for labels, _ in page["gpuledger_pod_owner"]] == [TRAINER]
    assert {labels["pod"] for labels, _ in page["gpuledger_pod_requests"]} == {TRAINER}
    assert page["gpuledger_node_info"] == [
        (
            {
                "node": NODE,
                "instance_type": "p5.48xlarge",
                "capacity_type": "spot",
                "region": "us-east-1",
                "gpu_count": "8",
            },
            1.0,
        )
    ]
    # an older row of the node (a late reading) does not replace the newest
    live.update(Rows.from_records(nodes=[node_record(instance_type="p4d.24xlarge")]))
    assert served(live)["gpuledger_node_info"][0][0]["instance_type"] == "p5.48xlarge"


def test_records_render_as_rows_do_and_an_agent_without_identity_serves_none() -> None:
    rows = agent_rows(T0)
    live = LiveMetrics()
    live.update(
        Records(
            [tuple(r.values()) for r in rows.samples.to_pylist()],
            [tuple(r.values()) for r in rows.allocations.to_pylist()],
            [tuple(r.values()) for r in rows.nodes.to_pylist()],
        )
    )
    from_rows = LiveMetrics()
    from_rows.update(rows)
    assert served(live) == served(from_rows)
    bare = LiveMetrics()
    bare.update(Rows.from_records([sample_record(T0, UUID_0, 0)]))
    assert not {name for name in served(bare) if name.startswith("gpuledger_")}


# ----------------------------------------------------------------------------------------------------- kube_state


def _dcgm_rows() -> Rows:
    held = {"UUID": UUID_0, "gpu": "0", "modelName": H100, "Hostname": NODE}
    points = [
        DcgmPoint("DCGM_FI_DEV_GPU_UTIL", {**held, "pod": TRAINER, "namespace": "team-a", "container": "main"}, T0, 1),
        DcgmPoint("DCGM_FI_DEV_GPU_UTIL", {**held, "UUID": UUID_1, "gpu": "1", "pod": WORKER, "namespace": "research",
                                           "container": "pytorch"}, T0, 2),
        DcgmPoint("DCGM_FI_DEV_GPU_UTIL", {**held, "UUID": "GPU-other", "Hostname": "n2"}, T0, 3),
    ]  # fmt: skip
    return rows_from_points(points, cluster=CLUSTER, source="prometheus")


def _at(labels: dict[str, str], value: float = 1.0) -> Series:
    return Series(labels, [(T0.timestamp(), value)])


def test_kube_state_metrics_wins_over_the_agents_series_where_both_exist() -> None:
    agent_node = {
        "instance_type": "p5.48xlarge",
        "capacity_type": "spot",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "provider_id": PROVIDER_ID,
        "gpu_count": "8",
        "mig_strategy": "none",
    }
    kube = KubeState(
        node_labels=[
            _at(
                {
                    "node": NODE,
                    "label_node_kubernetes_io_instance_type": "p5en.48xlarge",
                    "label_karpenter_sh_capacity_type": "on-demand",
                    "label_topology_kubernetes_io_region": "us-east-1",
                }
            )
        ],
        gpu_requests=[],
        pod_owners=[
            _at(
                {
                    "namespace": "team-a",
                    "pod": TRAINER,
                    "owner_kind": "StatefulSet",
                    "owner_name": "trainer-set",
                    "owner_is_controller": "true",
                }
            )
        ],
        resource_requests=[_at({"namespace": "team-a", "pod": TRAINER, "resource": "cpu"}, 2.0)],
        agent_nodes=[
            _at({"node": NODE, **agent_node}),
            # honor_labels off: a clashing label arrives as exported_*; a capacity type the warehouse refuses is dropped
            _at({"exported_node": "n2", "node": "agent-pod-node", **agent_node, "capacity_type": "reserved"}),
        ],
        agent_owners=[
            _at(
                {
                    "namespace": "team-a",
                    "pod": TRAINER,
                    "owner_kind": "Deployment",
                    "owner_name": "trainer",
                    "owner_chain": TRAINER_CHAIN,
                }
            ),
            _at(
                {
                    "namespace": "gpuledger",
                    "pod": "gpuledger-agent-x7k2p",
                    "exported_namespace": "research",
                    "exported_pod": WORKER,
                    "owner_kind": "PyTorchJob",
                    "owner_name": "llama-ft",
                    "owner_chain": "Pod<-PyTorchJob/llama-ft",
                }
            ),
        ],
        agent_requests=[
            _at({"namespace": "team-a", "pod": TRAINER, "resource": "cpu"}, 4.25),
            _at({"namespace": "team-a", "pod": TRAINER, "resource": "memory"}, float(TRAINER_MEMORY)),
            _at({"exported_namespace": "research", "exported_pod": WORKER, "resource": "cpu"}, 8.0),
        ],
    )
    rows = kube_rows(_dcgm_rows(), kube, cluster=CLUSTER)
    nodes = {r["node"]: r for r in rows.nodes.to_pylist()}
    # kube-state-metrics' labels win; what it leaves null comes from the agent
    assert {k: nodes[NODE][k] for k in ("instance_type", "capacity_type", "region", "zone", "provider_id")} == {
        "instance_type": "p5en.48xlarge",
        "capacity_type": "on-demand",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "provider_id": PROVIDER_ID,
    }
    assert (nodes[NODE]["gpu_count"], nodes[NODE]["mig_strategy"]) == (8, "none")
    # a node without kube_node_labels is the agent's
    assert (nodes["n2"]["instance_type"], nodes["n2"]["capacity_type"], nodes["n2"]["gpu_count"]) == (
        "p5.48xlarge",
        None,
        8,
    )
    assert "agent-pod-node" not in nodes
    held = {r["pod"]: r for r in rows.allocations.to_pylist()}
    trainer, worker = held[TRAINER], held[WORKER]
    assert (trainer["owner_kind"], trainer["owner_name"], trainer["workload"]) == (
        "StatefulSet",
        "trainer-set",
        "trainer-set",
    )
    # the request series of kube-state-metrics at that step win as a whole (its pod requests no memory)
    assert (trainer["cpu_request"], trainer["memory_request_bytes"]) == (2.0, None)
    assert (worker["owner_kind"], worker["owner_name"], worker["owner_chain"], worker["workload"]) == (
        "PyTorchJob",
        "llama-ft",
        "Pod<-PyTorchJob/llama-ft",
        "llama-ft",
    )
    assert (worker["cpu_request"], worker["memory_request_bytes"]) == (8.0, None)


def test_the_agents_owner_chain_gives_the_workload_as_kube_state_metrics_would() -> None:
    def workload(pod: str, kind: str, name: str, chain: str | None) -> tuple[str | None, ...]:
        labels = {"namespace": "ns", "pod": pod, "owner_kind": kind, "owner_name": name}
        labels |= {"owner_chain": chain} if chain else {}
        points = [DcgmPoint("DCGM_FI_DEV_GPU_UTIL", {"UUID": "GPU-x", "Hostname": "n", "pod": pod, "namespace": "ns"},
                            T0, 1.0)]  # fmt: skip
        rows = kube_rows(
            rows_from_points(points, cluster=CLUSTER, source="prometheus"),
            KubeState([], [], [], agent_owners=[_at(labels)]),
            cluster=CLUSTER,
        )
        (row,) = rows.allocations.to_pylist()
        return row["workload"], row["owner_chain"]

    assert workload(TRAINER, "Deployment", "trainer", TRAINER_CHAIN) == ("trainer", TRAINER_CHAIN)
    chain = "Pod<-Job/batch-eval-28931460"
    assert workload("batch-eval-28931460-q7x2z", "Job", "batch-eval-28931460", chain) == ("batch-eval", chain)
    assert workload("serve-0", "Workflow", "nightly", "Pod<-Workflow/nightly") == ("nightly", "Pod<-Workflow/nightly")
    assert workload("serve-0", "Workflow", "nightly", None) == ("nightly", None)


def test_node_rows_from_the_agent_alone_per_date() -> None:
    later = T0.timestamp() + 86_400
    info = {"node": NODE, "instance_type": "p5.48xlarge", "capacity_type": "spot", "mig_strategy": "bogus"}
    rows = node_rows(
        [],
        Rows.empty().samples,
        cluster=CLUSTER,
        agent_nodes=[
            Series(info, [(T0.timestamp(), 1.0)]),
            Series(info | {"capacity_type": "on-demand"}, [(later, 1)]),
        ],
    )
    assert [(r["date"], r["capacity_type"], r["mig_strategy"], r["labels"]) for r in rows] == [
        (T0.date(), "spot", None, None),
        ((T0 + dt.timedelta(days=1)).date(), "on-demand", None, None),
    ]


# ----------------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def agent() -> Iterator[int]:
    """An agent loop serving :func:`agent_rows` stamped now, every 0.25 s; yields its port."""
    stop = threading.Event()
    port = free_port()
    serving = threading.Event()
    loop = threading.Thread(
        target=jobs.run_exporter,
        args=(lambda: agent_rows(dt.datetime.now(dt.UTC)),),
        kwargs={
            "interval_s": 0.25,
            "metrics_port": port,
            "stop": stop,
            "on_serving": lambda _addr, _port: serving.set(),
        },
        daemon=True,
    )
    loop.start()
    assert serving.wait(10), "the agent did not serve /metrics"
    yield port
    stop.set()
    loop.join(10)


@pytest.fixture
def prometheus(tmp_path: Path, agent: int) -> Iterator[PrometheusServer]:
    require_binaries()
    config = (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: gpuledger-agent\n"
        "    honor_labels: true\n"
        f'    static_configs:\n      - targets: ["127.0.0.1:{agent}"]\n'
    )
    data = tmp_path / "prometheus-data"
    data.mkdir()
    server = PrometheusServer(data, config_text=config).start()
    yield server
    server.stop()


def _wait_for_scrapes(url: str, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    query = {"query": "count_over_time(gpuledger_pod_owner[1m])"}
    while time.monotonic() < deadline:
        result = requests.get(f"{url}/api/v1/query", params=query, timeout=5).json()["data"]["result"]
        if result and min(float(r["value"][1]) for r in result) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus did not scrape the agent {count} times within {timeout_s:g} s")


@pytest.mark.slow  # ~10 s: Prometheus syncs its first targets 5 s after it starts
def test_scrape_reads_the_agents_node_and_owners_through_a_real_prometheus(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    began = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    _wait_for_scrapes(prometheus.url, 5)
    names = requests.get(f"{prometheus.url}/api/v1/label/__name__/values", timeout=5).json()["data"]
    assert not [n for n in names if n.startswith("kube_")] and "gpuledger_node_info" in names

    lake = Lake(tmp_path / "wh", create=True)
    scraper = PrometheusScraper(
        PrometheusClient(prometheus.url, env={}),
        cluster=CLUSTER,
        store=scrape_store(lake),
        read_state=lake.read_state,
        step_s=1,
        settle_s=0,
    )
    result = scraper.scrape(began, dt.datetime.now(dt.UTC))
    assert result.samples and result.allocations and result.nodes

    nodes = lake.scan(NODES).collect()
    assert nodes.select("node", "instance_type", "capacity_type", "region", "zone", "provider_id").unique().rows() == [
        (NODE, "p5.48xlarge", "spot", "us-east-1", "us-east-1a", PROVIDER_ID)
    ]
    assert nodes.select("gpu_count", "mig_strategy", "gpu_model").unique().rows() == [(8, "none", H100)]

    held = (
        lake.scan(GPU_ALLOCATIONS)
        .collect()
        .group_by("namespace", "pod")
        .agg(
            pl.len().alias("rows"),
            *(
                pl.col(c).unique().alias(c)
                for c in ("workload", "owner_kind", "owner_name", "owner_chain", "cpu_request", "memory_request_bytes")
            ),
        )
        .sort("pod")
    )
    facts = {r["pod"]: r for r in held.iter_rows(named=True)}
    assert set(facts) == {TRAINER, WORKER}
    trainer, worker = facts[TRAINER], facts[WORKER]
    assert trainer["namespace"] == "team-a" and trainer["rows"] >= 2
    assert (trainer["owner_kind"], trainer["owner_name"], trainer["workload"]) == (
        ["Deployment"],
        ["trainer"],
        ["trainer"],
    )
    assert trainer["owner_chain"] == [TRAINER_CHAIN]
    assert (trainer["cpu_request"], trainer["memory_request_bytes"]) == ([4.25], [TRAINER_MEMORY])
    # the pod's name alone would give llama-ft-worker: the workload is the agent's owner
    assert (worker["owner_kind"], worker["workload"], worker["owner_chain"]) == (
        ["PyTorchJob"],
        ["llama-ft"],
        ["Pod<-PyTorchJob/llama-ft"],
    )
    assert (worker["cpu_request"], worker["memory_request_bytes"]) == ([8.0], [None])
