"""The agent's own Node object over HTTPS (a real TLS server on loopback, the certificate made by openssl) into its
``nodes`` row: the row a scrape of kube-state-metrics would store for the same labels, one per day, and a failure
that is one warning, never the token."""

from __future__ import annotations

import datetime as dt
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.metrics import LiveMetrics
from collector.node_object import ThisNode, api_url_from, metric_labels
from collector.prometheus.kube_state import node_row
from collector.rows import Records, Rows
from gpuledger.settings import Settings
from gpuledger.sources import node_object
from tests.test_kubelet_pods import TOKEN, certificate  # noqa: F401  (fixture)
from warehouse.schema import GPU_SAMPLES, NODES

NODE = "ip-10-0-1-23.ec2.internal"
LABELS = {
    "beta.kubernetes.io/arch": "amd64",
    "kubernetes.io/hostname": NODE,
    "node.kubernetes.io/instance-type": "p5.48xlarge",
    "karpenter.sh/capacity-type": "spot",
    "karpenter.sh/nodepool": "gpu",
    "topology.kubernetes.io/region": "us-east-1",
    "topology.kubernetes.io/zone": "us-east-1a",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    "nvidia.com/mig.strategy": "single",
}
PROVIDER_ID = "aws:///us-east-1a/i-0abc1234def567890"
NODE_OBJECT = {
    "kind": "Node",
    "apiVersion": "v1",
    "metadata": {"name": NODE, "labels": LABELS, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
    "spec": {"providerID": PROVIDER_ID, "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
    "status": {"capacity": {"nvidia.com/gpu": "8"}},
}
H100 = "NVIDIA H100 80GB HBM3"


class ApiServer:
    """``/api/v1/nodes/<NODE>`` for the right bearer token (401 without it, 404 for another node), ``status`` to
    misbehave; counts its requests."""

    def __init__(self, certificate: tuple[Path, Path]) -> None:  # noqa: F811
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with suppress(OSError):
                    self.answer()

            def answer(self) -> None:
                owner.requests += 1
                status, body = owner.status, json.dumps(NODE_OBJECT).encode()
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status = 401
                if self.path != f"/api/v1/nodes/{NODE}":
                    status = 404
                if status != 200:
                    body = json.dumps({"kind": "Status", "code": status}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(certificate: tuple[Path, Path]) -> Iterator[ApiServer]:  # noqa: F811
    server = ApiServer(certificate)
    yield server
    server.close()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def this_node(api: ApiServer, token: Path, certificate: tuple[Path, Path], **kwargs: Any) -> ThisNode:  # noqa: F811
    return ThisNode(api.url, NODE, cluster="c1", token_file=token, ca_file=certificate[0], timeout_s=2.0, **kwargs)


def reading(when: dt.datetime, gpus: int = 2) -> Records:
    """An NVML reading of ``gpus`` GPUs on NODE at ``when``, as tuples in gpu_samples' column order."""
    names = GPU_SAMPLES.schema.names
    rows = []
    for i in range(gpus):
        values = dict.fromkeys(names) | {
            "ts": when,
            "cluster": "c1",
            "node": NODE,
            "gpu_uuid": f"GPU-{i:08x}",
            "gpu_index": i,
            "gpu_model": H100,
            "source": "nvml",
            "util_pct": 50.0,
        }
        rows.append(tuple(values[n] for n in names))
    return Records(rows, [], [])


def test_the_labels_are_named_as_kube_state_metrics_names_them() -> None:
    assert metric_labels({"node.kubernetes.io/instance-type": "p5.48xlarge", "a-b.c/d": "x"}) == {
        "label_node_kubernetes_io_instance_type": "p5.48xlarge",
        "label_a_b_c_d": "x",
    }
    assert api_url_from({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://10.96.0.1:443"
    )
    assert api_url_from({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) == (
        "https://[fd00::1]:443"
    )
    assert api_url_from({}) is None


def test_the_node_row_is_the_one_kube_state_metrics_would_give(
    api: ApiServer,
    token: Path,
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    when = dt.datetime(2026, 12, 3, 7, 0, tzinfo=dt.UTC)
    completed = this_node(api, token, certificate).complete(reading(when))
    assert isinstance(completed, Records)
    (row,) = completed.node_dicts()
    assert row == node_row("c1", NODE, when.date(), metric_labels(LABELS), H100, 2, PROVIDER_ID)
    assert (row["instance_type"], row["capacity_type"], row["region"], row["zone"]) == (
        "p5.48xlarge",
        "spot",
        "us-east-1",
        "us-east-1a",
    )
    assert row["gpu_count"] == 8  # the instance type's GPUs (GPU feature discovery's label), not the 2 that report
    assert (row["provider_id"], row["mig_strategy"], row["gpu_model"]) == (PROVIDER_ID, "single", H100)
    assert completed.to_rows().nodes.schema == NODES.schema


def test_one_row_a_day_and_one_read_per_refresh(
    api: ApiServer,
    token: Path,
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    clock = Clock()
    node = this_node(api, token, certificate, monotonic=clock)
    day = dt.datetime(2026, 12, 3, 23, 59, 50, tzinfo=dt.UTC)
    assert len(node.complete(reading(day)).nodes) == 1
    assert len(node.complete(reading(day + dt.timedelta(seconds=5))).nodes) == 0  # the same day: nothing new
    assert api.requests == 1
    rows = node.complete(Rows.from_records(samples=reading(day + dt.timedelta(seconds=15)).sample_dicts()))
    assert isinstance(rows, Rows)
    assert rows.nodes.column("date").to_pylist() == [dt.date(2026, 12, 4)]  # the next UTC day
    clock.now += 601
    node.complete(reading(day + dt.timedelta(seconds=20)))
    assert api.requests == 2


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("wrong token", "(HTTP 401 Unauthorized): grant the agent's service account get on nodes"),
        ("403", "(HTTP 403 Forbidden): grant the agent's service account get on nodes (deploy/rbac.yaml)"),
        ("no token", "(no service account token at {token}: No such file or directory)"),
    ],
)
def test_a_node_that_cannot_be_read_is_one_warning_and_no_row(
    api: ApiServer,
    token: Path,
    certificate: tuple[Path, Path],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    breakage: str,
    message: str,
) -> None:
    if breakage == "wrong token":
        token.write_text("someone-else")
    elif breakage == "403":
        api.status = 403
    else:
        token.unlink()
    clock = Clock()
    node = this_node(api, token, certificate, monotonic=clock)
    when = dt.datetime(2026, 12, 3, 7, tzinfo=dt.UTC)
    with caplog.at_level(logging.WARNING, logger="collector.node_object"):
        for _ in range(3):
            assert node.complete(reading(when)).nodes == []
            clock.now += 601
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"node object {api.url}/api/v1/nodes/{NODE} cannot be read ")
    assert message.format(token=token) in warnings[0]
    assert TOKEN not in caplog.text


def test_what_was_read_is_kept_through_a_failure(
    api: ApiServer,
    token: Path,
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    clock = Clock()
    node = this_node(api, token, certificate, monotonic=clock)
    day = dt.datetime(2026, 12, 3, 7, tzinfo=dt.UTC)
    node.complete(reading(day))
    api.status = 500
    clock.now += 601
    (row,) = node.complete(reading(day + dt.timedelta(days=1))).node_dicts()
    assert row["instance_type"] == "p5.48xlarge"


def test_the_agents_metrics_name_its_node(
    api: ApiServer,
    token: Path,
    certificate: tuple[Path, Path],  # noqa: F811
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from collector.metrics import serve

    live = LiveMetrics()
    live.update(this_node(api, token, certificate).complete(reading(dt.datetime(2026, 12, 3, 7, tzinfo=dt.UTC))))
    server = serve(live, 0)
    try:
        import requests

        page = requests.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    (info,) = [f for f in text_string_to_metric_families(page) if f.name == "gpuledger_node_info"]
    (sample,) = info.samples
    assert sample.labels["instance_type"] == "p5.48xlarge"
    assert sample.labels["capacity_type"] == "spot"
    assert sample.labels["provider_id"] == PROVIDER_ID


def test_the_reader_reads_the_node_only_in_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert node_object(Settings(), NODE) is None
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    found = node_object(Settings(cluster="c2"), NODE)
    assert found is not None and found.url == f"https://10.96.0.1:443/api/v1/nodes/{NODE}"
    assert found.cluster == "c2"
    configured = node_object(Settings(kube_api_url="https://api.example:6443"), NODE)
    assert configured is not None and configured.url.startswith("https://api.example:6443/api/v1/nodes/")
