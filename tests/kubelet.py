"""A real gRPC pod-resources server on a unix socket, as a kubelet serves it (fixtures for the k8s tests)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from collector.podresources import api_pb2, api_pb2_grpc


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):
    """The pod-resources service as a kubelet serves it, answering List with one node's pods."""

    def __init__(self, response: api_pb2.ListPodResourcesResponse, release: threading.Event | None = None) -> None:
        self.response = response
        self.release = release

    def List(self, request: api_pb2.ListPodResourcesRequest, context: grpc.ServicerContext) -> object:
        if self.release is not None:
            self.release.wait(10)
        return self.response


@pytest.fixture
def socket_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for a unix socket: tmp_path, unless its path is too long for one (sun_path holds 108 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="gl-") as short:
        yield Path(short)


@pytest.fixture
def serve(socket_dir: Path) -> Iterator[Callable[[api_pb2_grpc.PodResourcesListerServicer], Path]]:
    """Start a real gRPC server with the given servicer on ``<dir>/kubelet.sock``; returns the socket's path."""
    servers: list[grpc.Server] = []

    def start(servicer: api_pb2_grpc.PodResourcesListerServicer) -> Path:
        path = socket_dir / "kubelet.sock"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix://{path}")
        server.start()
        servers.append(server)
        return path

    yield start
    for server in servers:
        server.stop(grace=None)
