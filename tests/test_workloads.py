"""The workload a pod belongs to, from its owner or its name."""

from __future__ import annotations

import pytest

from collector.workloads import workload_from_owner


@pytest.mark.parametrize(
    ("owner_kind", "owner_name", "pod", "workload"),
    [
        # The owner reference, when known.
        ("ReplicaSet", "trainer-7d9f8b6c5d", "trainer-7d9f8b6c5d-x2k4q", "trainer"),
        ("ReplicaSet", "llm-serve-6d5f7c9b8d", "llm-serve-6d5f7c9b8d-q7wzx", "llm-serve"),
        ("ReplicaSet", "sd-xl-api-54f9c8b7d6", "sd-xl-api-54f9c8b7d6-7hw2n", "sd-xl-api"),
        ("ReplicaSet", "frontend", "frontend-x2k4q", "frontend"),  # a ReplicaSet without a Deployment
        ("StatefulSet", "jupyter-alice", "jupyter-alice-0", "jupyter-alice"),
        ("StatefulSet", "redis-shard-2", "redis-shard-2-1", "redis-shard-2"),
        ("Job", "bert-finetune", "bert-finetune-7kq2x", "bert-finetune"),
        ("Job", "nightly-eval-28934567", "nightly-eval-28934567-b9wzt", "nightly-eval"),  # a CronJob's run
        ("DaemonSet", "nvidia-dcgm-exporter", "nvidia-dcgm-exporter-5nq8x", "nvidia-dcgm-exporter"),
        ("PyTorchJob", "llama-ft", "llama-ft-worker-0", "llama-ft"),
        ("Node", "gpu-node-a1", "etcd-gpu-node-a1", "etcd"),  # a static pod's mirror
        # The pod name alone.
        (None, None, "trainer-7d9f8b6c5d-x2k4q", "trainer"),
        (None, None, "llm-serve-6d5f7c9b8d-q7wzx", "llm-serve"),
        (None, None, "jupyter-alice-0", "jupyter-alice"),
        (None, None, "redis-shard-2-1", "redis-shard-2"),
        (None, None, "bert-finetune-7kq2x", "bert-finetune"),
        (None, None, "nightly-eval-28934567-b9wzt", "nightly-eval"),
        (None, None, "nvidia-dcgm-exporter-5nq8x", "nvidia-dcgm-exporter"),
        (None, None, "cuda-vectoradd", "cuda-vectoradd"),
        (None, None, "triton-server", "triton-server"),
        ("", "", "llama-70b", "llama-70b"),
    ],
)
def test_workload_from_owner(owner_kind: str | None, owner_name: str | None, pod: str, workload: str) -> None:
    assert workload_from_owner(owner_kind, owner_name, pod) == workload
