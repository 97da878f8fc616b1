"""The kubelet's pod list: GPU pods' owners and CPU/memory requests on the agent's rows, from a real HTTPS server.

The pods are made from real manifests (tests/fixtures/kubelet-pods: a vLLM Deployment, a Kubeflow PyTorchJob) the way
their controllers and the API server make them, wrapped in a ``v1.PodList`` and served on loopback over TLS with a
certificate made by openssl for the test.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from collector.agent import NodeAgent, Spool
from collector.kubelet_pods import (
    BadQuantity,
    KubeletPods,
    PodFacts,
    parse_quantity,
    pod_facts,
    pod_owner,
    with_pod_facts,
)
from collector.nvml import NvmlSampler
from collector.podresources import api_pb2
from collector.podresources.client import GpuAssignment, PodResourcesClient
from collector.rows import Rows
from collector.workloads import Owner
from gpuledger import jobs
from gpuledger.settings import Settings
from gpuledger.sources import kubelet_holders, kubelet_pods
from tests.kubelet import Kubelet
from tests.nvml_standin import CapturedNVML
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS

TOKEN = "eyJhbGciOiJSUzI1NiJ9.agent-token-never-logged"
DEPLOY_POD = "vllm-gemma-deployment-7d9f8b6c5d-x2k4q"
DEPLOY_RS = "vllm-gemma-deployment-7d9f8b6c5d"
JOB_POD = "pytorch-dist-mnist-nccl-master-0"


# ------------------------------------------------------------------------------------------------ quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1e9", Decimal(10**9)),
        ("1G", Decimal(10**9)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("250u", Decimal("0.00025")),
        ("100n", Decimal("1e-7")),
        ("1E", Decimal(10**18)),  # exa, not an exponent
        ("2E3", Decimal(2000)),
        ("1e-3", Decimal("0.001")),
        ("+1k", Decimal(1000)),
        (".5", Decimal("0.5")),
        ("1Ki", Decimal(1024)),
        (4, Decimal(4)),
        (2.5, Decimal("2.5")),
    ],
)
def test_kubernetes_quantities(text: object, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1e", "1 Gi", "1gi", "1KB", "1.2.3", "-", True, None])
def test_a_bad_quantity_is_refused(text: object) -> None:
    with pytest.raises(BadQuantity, match="is not a Kubernetes quantity"):
        parse_quantity(text)


# ------------------------------------------------------------------------------------------------ owners


def test_a_replicaset_climbs_to_its_deployment_by_its_name() -> None:
    ref = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": DEPLOY_RS, "controller": True}]
    assert pod_owner("llm", DEPLOY_POD, ref) == Owner(
        "vllm-gemma-deployment",
        "Deployment",
        "vllm-gemma-deployment",
        f"Pod<-ReplicaSet/{DEPLOY_RS}<-Deployment/vllm-gemma-deployment",
    )


def test_other_owners_are_the_top_as_far_as_the_agent_knows() -> None:
    job = [{"kind": "PyTorchJob", "name": "llama-ft", "controller": True}]
    assert pod_owner("ml", "llama-ft-worker-0", job) == Owner(
        "llama-ft", "PyTorchJob", "llama-ft", "Pod<-PyTorchJob/llama-ft"
    )
    cron = [{"kind": "Job", "name": "backup-28934567", "controller": True}]
    assert pod_owner("ops", "backup-28934567-q7x2z", cron) == Owner(
        "backup", "Job", "backup-28934567", "Pod<-Job/backup-28934567"
    )
    bare_rs = [{"kind": "ReplicaSet", "name": "frontend", "controller": True}]  # no template hash: no Deployment
    assert pod_owner("web", "frontend-x2k4q", bare_rs).chain == "Pod<-ReplicaSet/frontend"


def test_only_the_controller_reference_counts() -> None:
    refs: list[dict[str, Any]] = [
        {"kind": "ConfigMap", "name": "owner-not-controller"},
        {"kind": "StatefulSet", "name": "db", "controller": True},
    ]
    assert pod_owner("data", "db-0", refs).chain == "Pod<-StatefulSet/db"
    assert pod_owner("data", "db-0", refs[:1]) == Owner("db")  # no controller: the pod's name, no chain


# ------------------------------------------------------------------------------------------------ the pod list


def _manifest(fixtures: Path, name: str, kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((fixtures / "kubelet-pods" / name).read_text())
    return next(d for d in docs if d and d["kind"] == kind)


def _as_the_api_server_stores_it(spec: dict[str, Any]) -> dict[str, Any]:
    """A pod spec as the API server stores it: a container's requests default to its limits where unset."""
    spec = copy.deepcopy(spec)
    for container in spec["containers"]:
        resources = container.setdefault("resources", {})
        resources["requests"] = {**resources.get("limits", {}), **resources.get("requests", {})}
    return spec


def pod_list(fixtures: Path) -> dict[str, Any]:
    """The kubelet's ``/pods`` on a node running a pod of each fixture (and a CPU-only pod without owner)."""
    deployment = _manifest(fixtures, "vllm-2-9b-it.yaml", "Deployment")
    job = _manifest(fixtures, "pytorch_job_mnist_nccl.yaml", "PyTorchJob")
    template = deployment["spec"]["template"]
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    pods = [
        {
            "metadata": {
                "name": DEPLOY_POD,
                "generateName": f"{DEPLOY_RS}-",
                "namespace": "llm",
                "labels": {**template["metadata"]["labels"], "pod-template-hash": "7d9f8b6c5d"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": DEPLOY_RS,
                        "uid": "b2bb87e9-36bf-409a-af2d-4da8ae4b3ef0",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": _as_the_api_server_stores_it(template["spec"]),
            "status": {"phase": "Running"},
        },
        {
            "metadata": {
                "name": JOB_POD,
                "namespace": "research",
                "labels": {"training.kubeflow.org/job-name": job["metadata"]["name"]},
                "annotations": master["metadata"]["annotations"],
                "ownerReferences": [
                    {
                        "apiVersion": job["apiVersion"],
                        "kind": job["kind"],
                        "name": job["metadata"]["name"],
                        "uid": "55819e8d-3137-47b1-8bfc-a65e111d63b5",
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": _as_the_api_server_stores_it(master["spec"]),
            "status": {"phase": "Running"},
        },
        {
            "metadata": {"name": "debug", "namespace": "default"},
            "spec": {"containers": [{"name": "sh", "image": "busybox", "resources": {}}]},
        },
    ]
    return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}


EXPECTED = {
    ("llm", DEPLOY_POD): PodFacts(
        Owner(
            "vllm-gemma-deployment",
            "Deployment",
            "vllm-gemma-deployment",
            f"Pod<-ReplicaSet/{DEPLOY_RS}<-Deployment/vllm-gemma-deployment",
        ),
        4.0,
        30 * 2**30,
    ),
    ("research", JOB_POD): PodFacts(
        Owner(
            "pytorch-dist-mnist-nccl",
            "PyTorchJob",
            "pytorch-dist-mnist-nccl",
            "Pod<-PyTorchJob/pytorch-dist-mnist-nccl",
        ),
        None,
        None,
    ),
    ("default", "debug"): PodFacts(Owner("debug")),
}


def test_pod_facts_from_the_pod_list(fixtures: Path) -> None:
    assert pod_facts(pod_list(fixtures)) == EXPECTED


def test_requests_sum_over_containers_and_leave_init_containers_out(fixtures: Path) -> None:
    body = pod_list(fixtures)
    spec = body["items"][0]["spec"]
    spec["containers"].append({"name": "log-shipper", "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}})
    spec["initContainers"] = [{"name": "fetch-weights", "resources": {"requests": {"cpu": "16", "memory": "64Gi"}}}]
    facts = pod_facts(body)[("llm", DEPLOY_POD)]
    assert (facts.cpu_request, facts.memory_request_bytes) == (4.25, 30 * 2**30 + 512 * 2**20)


def test_a_pod_whose_requests_do_not_parse_keeps_its_owner(fixtures: Path, caplog: pytest.LogCaptureFixture) -> None:
    body = pod_list(fixtures)
    body["items"][0]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "four"
    facts = pod_facts(body)[("llm", DEPLOY_POD)]
    assert facts == PodFacts(EXPECTED[("llm", DEPLOY_POD)].owner)
    assert f"pod llm/{DEPLOY_POD}: 'four' is not a Kubernetes quantity" in caplog.text


# ------------------------------------------------------------------------------------------------ a real kubelet


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed serving certificate for 127.0.0.1 (its own CA), as a kubelet without serverTLSBootstrap has."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "kubelet.crt", folder / "kubelet.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class KubeletServer:
    """The kubelet's HTTPS port: ``/pods`` for the right bearer token, 401 without one, ``status`` and ``delay_s``
    to misbehave."""

    def __init__(self, body: dict[str, Any], certificate: tuple[Path, Path]) -> None:
        self.body = json.dumps(body).encode()
        self.status = 200
        self.delay_s = 0.0
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with suppress(OSError):  # a client that gave up (the timeout test) or refused the certificate
                    self.answer()

            def answer(self) -> None:
                owner.requests += 1
                time.sleep(owner.delay_s)
                status = owner.status
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status = 401
                body = owner.body if status == 200 else b"Unauthorized" if status == 401 else b"Forbidden"
                if self.path != "/pods":
                    status, body = 404, b"404 page not found"
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # handshakes
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
def kubelet(fixtures: Path, certificate: tuple[Path, Path]) -> Iterator[KubeletServer]:
    server = KubeletServer(pod_list(fixtures), certificate)
    yield server
    server.close()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(kubelet: KubeletServer, token: Path, certificate: tuple[Path, Path], **kwargs: Any) -> KubeletPods:
    options: dict[str, Any] = {"token_file": token, "ca_file": certificate[0], "timeout_s": 2.0}
    options.update(kwargs)
    return KubeletPods(kubelet.url, **options)


def test_the_pod_list_over_https_with_the_token(
    kubelet: KubeletServer, token: Path, certificate: tuple[Path, Path]
) -> None:
    assert client(kubelet, token, certificate).list() == EXPECTED


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_against_the_ca_file(
    kubelet: KubeletServer, token: Path, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
         "-keyout", str(tmp_path / "other.key"), "-out", str(other)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with pytest.raises(Exception, match="its TLS certificate does not verify") as failure:
        client(kubelet, token, certificate, ca_file=other).list()
    assert "kubelet_tls_verify = false" in str(failure.value)
    assert client(kubelet, token, certificate, ca_file=other, verify=False).list() == EXPECTED


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no token", "(no service account token at {token}: No such file or directory): run the agent with its"),
        ("wrong token", "(401 Unauthorized): the kubelet must accept service account tokens"),
        ("403", "(403 Forbidden): grant the agent's service account get on nodes/pods"),
        ("slow", "(no answer within 0.3 s): check kubelet_url"),
        ("no CA file", "(no CA file at {ca}): set kubelet_ca_file, or kubelet_tls_verify = false"),
    ],
)
def test_an_unreadable_pod_list_is_one_warning_per_failure_and_null_facts(
    kubelet: KubeletServer,
    token: Path,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    breakage: str,
    message: str,
) -> None:
    ca = certificate[0]
    if breakage == "no token":
        token.unlink()
    elif breakage == "wrong token":
        token.write_text("someone-else")
    elif breakage == "403":
        kubelet.status = 403
    elif breakage == "slow":
        kubelet.delay_s = 1.0
    elif breakage == "no CA file":
        ca = tmp_path / "missing-ca.crt"
    clock = Clock()
    pods = client(kubelet, token, certificate, ca_file=ca, timeout_s=0.3, monotonic=clock)
    with caplog.at_level(logging.WARNING, logger="collector.kubelet_pods"):
        for _ in range(3):
            assert pods.lookup([("llm", DEPLOY_POD)]) == {}
            clock.now += 61  # past refresh_s: asked again, failing the same way
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"kubelet pod list {kubelet.url}/pods cannot be read ")
    assert message.format(token=token, ca=ca) in warnings[0]
    assert warnings[0].endswith("; GPU pods' owners and CPU/memory requests stay null until it can")
    assert TOKEN not in caplog.text


def test_the_list_is_cached_refreshed_and_kept_through_a_failure(
    kubelet: KubeletServer, token: Path, certificate: tuple[Path, Path]
) -> None:
    clock = Clock()
    pods = client(kubelet, token, certificate, monotonic=clock)
    deploy, job, new = ("llm", DEPLOY_POD), ("research", JOB_POD), ("llm", "vllm-gemma-deployment-7d9f8b6c5d-q7x2z")
    assert pods.lookup([deploy, job]) == {deploy: EXPECTED[deploy], job: EXPECTED[job]}
    assert pods.lookup([deploy]) == {deploy: EXPECTED[deploy]} and kubelet.requests == 1  # cached
    clock.now += 5
    assert pods.lookup([new]) == {} and kubelet.requests == 1  # an unknown pod asks again, but not within retry_s
    clock.now += 5
    assert pods.lookup([new]) == {} and kubelet.requests == 2
    kubelet.status = 403
    clock.now += 60
    assert pods.lookup([deploy]) == {deploy: EXPECTED[deploy]} and kubelet.requests == 3  # failed: kept as it was


# ------------------------------------------------------------------------------------------------ the agent


def test_the_agent_writes_owners_and_requests_on_its_allocation_rows(
    fixtures: Path,
    kubelet: KubeletServer,
    token: Path,
    certificate: tuple[Path, Path],
    serve: Callable[[Kubelet], Path],
    tmp_path: Path,
) -> None:
    sampler = NvmlSampler(
        cluster="c1", node="gpu-node-1", nvml=CapturedNVML(fixtures / "nvml-h200", utcnow, count=3), clock=utcnow
    )
    sampler.open()
    gpus = [d.uuid for d in sampler.devices]
    assignments = api_pb2.ListPodResourcesResponse(
        pod_resources=[
            api_pb2.PodResources(
                name=pod,
                namespace=namespace,
                containers=[
                    api_pb2.ContainerResources(
                        name=container,
                        devices=[api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[gpu])],
                    )
                ],
            )
            for (namespace, pod, container), gpu in zip(
                [
                    ("llm", DEPLOY_POD, "inference-server"),
                    ("research", JOB_POD, "pytorch"),
                    ("default", "not-in-the-pod-list-x2k4q", "main"),
                ],
                gpus,
                strict=True,
            )
        ]
    )
    socket = serve(Kubelet(assignments))
    pod_resources = PodResourcesClient(socket)
    sampler.holders = lambda: kubelet_holders(pod_resources.list_gpu_assignments, sampler.device_ids())
    settings = Settings(
        kubelet_url=kubelet.url, kubelet_token_file=token, kubelet_ca_file=certificate[0], kubelet_timeout_s=2.0
    )
    pods = kubelet_pods(settings, "gpu-node-1")
    root = tmp_path / "wh"
    agent = NodeAgent(
        lambda: pods.complete(sampler.read()),
        lambda rows: jobs.ingest(Lake(root, create=True), rows),
        Spool(tmp_path / "spool", 1 << 30),
    )
    stats = agent.run(once=True)
    assert stats.samples_taken == 1 and stats.last_batch is not None and stats.last_batch.value == "stored"
    rows = (
        Lake(root)
        .scan(GPU_ALLOCATIONS)
        .collect()
        .sort("pod")
        .select("pod", "workload", "owner_kind", "owner_name", "owner_chain", "cpu_request", "memory_request_bytes")
    )
    assert rows.rows() == [
        ("not-in-the-pod-list-x2k4q", "not-in-the-pod-list", None, None, None, None, None),
        (
            JOB_POD,
            "pytorch-dist-mnist-nccl",
            "PyTorchJob",
            "pytorch-dist-mnist-nccl",
            "Pod<-PyTorchJob/pytorch-dist-mnist-nccl",
            None,
            None,
        ),
        (
            DEPLOY_POD,
            "vllm-gemma-deployment",
            "Deployment",
            "vllm-gemma-deployment",
            f"Pod<-ReplicaSet/{DEPLOY_RS}<-Deployment/vllm-gemma-deployment",
            4.0,
            30 * 2**30,
        ),
    ]
    assert rows.schema["memory_request_bytes"] == pl.Int64 and rows.schema["cpu_request"] == pl.Float64


def test_the_agent_keeps_sampling_when_the_kubelet_refuses(
    fixtures: Path,
    kubelet: KubeletServer,
    certificate: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler = NvmlSampler(
        cluster="c1", node="gpu-node-1", nvml=CapturedNVML(fixtures / "nvml-h200", utcnow, count=1), clock=utcnow
    )
    sampler.open()
    uuid = sampler.devices[0].uuid
    sampler.holders = lambda: kubelet_holders(lambda: [_assignment("llm", DEPLOY_POD, uuid)], sampler.device_ids())
    pods = KubeletPods(kubelet.url, token_file=tmp_path / "no-token", ca_file=certificate[0], retry_s=0, refresh_s=0)
    reads = [pods.complete(sampler.read()) for _ in range(3)]
    assert all(len(r.allocation_dicts()) == 1 for r in reads)
    assert {r.allocation_dicts()[0]["owner_kind"] for r in reads} == {None}
    assert caplog.text.count("cannot be read (no service account token") == 1


def _assignment(namespace: str, pod: str, uuid: str) -> GpuAssignment:
    return GpuAssignment(namespace, pod, "main", "nvidia.com/gpu", uuid)


def test_arrow_rows_get_the_same_columns() -> None:
    rows = Rows.from_records(
        allocations=[
            {"ts": None, "cluster": "c1", "node": "n", "gpu_uuid": "GPU-1", "namespace": "llm", "pod": DEPLOY_POD,
             "workload": "vllm-gemma-deployment", "source": "dcgm"},
            {"ts": None, "cluster": "c1", "node": "n", "gpu_uuid": "GPU-2", "pid": 4242, "source": "dcgm"},
        ]
    )  # fmt: skip
    out = with_pod_facts(rows, lambda keys: {k: EXPECTED[k] for k in keys if k in EXPECTED})
    assert isinstance(out, Rows)
    got = [(r["pod"], r["owner_kind"], r["cpu_request"], r["memory_request_bytes"]) for r in out.allocation_dicts()]
    assert got == [(DEPLOY_POD, "Deployment", 4.0, 30 * 2**30), (None, None, None, None)]
    assert out.allocations.schema == GPU_ALLOCATIONS.schema
