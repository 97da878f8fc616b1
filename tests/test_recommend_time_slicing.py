"""The time-sliced pool's instance type (analysis.recommend.time_slicing, ``POOL_TYPE_RULE``): on hand-made fleets of
g6.12xlarge nodes (4 L4s; tests/recommend_inputs.py, priced by the shipped catalog), the cheapest instance type of the
same GPU model whose nodes hold the pods at once, each figure worked by hand from the shipped node prices
(analysis/data/aws_nvidia_gpu_instance_types.csv, us-east-1 on-demand) and vCPUs and memory
(analysis/data/gpu_instance_cpu_memory.csv)."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.recommend.model import Recommendation
from analysis.units import GIB
from tests.recommend_inputs import L4, Fleet, price, recommendations_of

G6_12XL = 4.6016  # 4 L4, 48 vCPUs, 192 GiB
G6_XL = 0.8048  # 1 L4, 4 vCPUs, 16 GiB
G6_4XL = 1.3232  # 1 L4, 16 vCPUs, 64 GiB


def sliced(pods: int, cpu: float | None = None, memory_gib: float | None = None) -> Recommendation:
    """``pods`` one-GPU autocomplete pods on g6.12xlarge nodes for 10 hours at 10% duty and 10 GiB of 24: k = min(4,
    floor(0.8 / 0.1) = 8, floor(24 / (10 x 1.1)) = 2) = 2, so ``pods`` / 2 GPUs are needed."""
    f = Fleet(10)
    for n in range((pods + 3) // 4):
        f.node(f"n{n}", "g6.12xlarge", "on-demand", L4, 4, "l4")
    for i in range(pods):
        f.gpu(
            f"n{i // 4}",
            f"GPU-{i}",
            util=10.0,
            mem_gib=10.0,
            total_gib=24,
            pod=("search", f"autocomplete-5d9f8b6c5d-{i}abcd", "app", "autocomplete"),
            owner_kind="Deployment",
            cpu_request=cpu,
            memory_request_bytes=None if memory_gib is None else int(memory_gib * GIB),
        )
    (r,) = recommendations_of("time-slicing", f.inputs())
    assert r.evidence["replicas_per_gpu"] == 2
    return r


def nodepool(r: Recommendation) -> dict[str, Any]:
    (pool,) = [m for m in r.manifests if m.obj["kind"] == "NodePool"]
    return pool.obj


def instance_type_of(pool: dict[str, Any]) -> list[str]:
    reqs = pool["spec"]["template"]["spec"]["requirements"]
    return [v for q in reqs if q["key"] == "node.kubernetes.io/instance-type" for v in q["values"]]


def considered(r: Recommendation) -> dict[str, dict[str, Any]]:
    return {c["instance_type"]: c for c in r.evidence["instance_types_considered"]}


def test_two_gpus_of_need_go_to_two_one_gpu_nodes() -> None:
    """4 pods at k = 2 need 2 L4s: 2 x g6.xlarge (0.8048 each, 1 vCPU and 4 GiB requested: a node takes min(1 x 2,
    4 / 1, 16 / 4) = 2) = 1.6096 USD/hour, not the g6.12xlarge's 4.6016 with two GPUs idle."""
    r = sliced(4, cpu=1.0, memory_gib=4.0)
    pool = nodepool(r)
    assert instance_type_of(pool) == ["g6.xlarge"]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "2"}  # 2 whole g6.xlarge nodes
    assert r.evidence["instance_type"] == "g6.12xlarge"
    assert (r.evidence["target_instance_type"], r.evidence["target_nodes"], r.evidence["gpus_needed"]) == (
        "g6.xlarge",
        2,
        2,
    )
    assert "of 2 g6.xlarge nodes instead of g6.12xlarge" in r.change
    ways = considered(r)
    assert ways["g6.xlarge"]["usd_per_hour"] == pytest.approx(2 * G6_XL)
    assert ways["g6.xlarge"]["why"] == "chosen: the lowest cost"
    assert ways["g6.12xlarge"]["nodes"] == 1 and ways["g6.12xlarge"]["usd_per_hour"] == pytest.approx(G6_12XL)
    assert ways["g6.12xlarge"]["why"].startswith("fits, but 1 x 4.6016 = 4.6016 USD/hour >= g6.xlarge's 1.6096")
    assert set(ways) >= {"g6.2xlarge", "g6.4xlarge", "g6.16xlarge", "g6.48xlarge", "gr6.4xlarge"}
    assert ways["g6.xlarge"]["price_source"] == "AWS on-demand us-east-1, karpenter-provider-aws @1d927085, 2026-07-20"
    pool_comments = " ".join(next(m for m in r.manifests if m.obj["kind"] == "NodePool").comments)
    assert "g6.xlarge" in pool_comments and "instead of g6.12xlarge" in pool_comments
    patch = r.manifests[-1]
    assert "(g6.xlarge nodes)" in " ".join(patch.comments)
    # the kind's own figure stays the GPU-hour one: 40 GPU-hours x (1 - 1/2) x price x 730 / 10
    assert r.savings_usd_month == pytest.approx(40 * 0.5 * price("g6.12xlarge", "on-demand", L4) * 73, rel=1e-9)


def test_requests_a_small_type_cannot_hold_keep_the_larger_one() -> None:
    """8 pods at k = 2 requesting 5 vCPUs and 20 GiB each: a g6.xlarge (4 vCPUs, 16 GiB) holds none; a g6.4xlarge
    holds min(2, 16 / 5, 64 / 20) = 2, so 4 nodes = 5.2928 USD/hour; one g6.12xlarge holds min(8, 48 / 5, 192 / 20)
    = 8 for 4.6016. Without the requests, 4 g6.xlarge (3.2192) would win."""
    r = sliced(8, cpu=5.0, memory_gib=20.0)
    assert instance_type_of(nodepool(r)) == ["g6.12xlarge"]
    assert nodepool(r)["spec"]["limits"] == {"nvidia.com/gpu": "4"}
    assert r.evidence["target_instance_type"] == "g6.12xlarge"
    assert (r.evidence["cpu_request_per_pod"], r.evidence["memory_request_gib_per_pod"]) == (5.0, 20.0)
    assert "instead of" not in r.change and "of 1 g6.12xlarge node (" in r.change
    ways = considered(r)
    assert ways["g6.xlarge"]["why"] == (
        "a g6.xlarge node holds no pod: 4 vCPUs < 5 requested, 16 GiB of memory < 20 requested"
    )
    assert ways["g6.4xlarge"]["nodes"] == 4
    assert ways["g6.4xlarge"]["why"] == "fits, but 4 x 1.3232 = 5.2928 USD/hour >= g6.12xlarge's 4.6016"
    assert ways["g6.12xlarge"]["why"] == "chosen: the lowest cost"

    unrequested = sliced(8)
    assert instance_type_of(nodepool(unrequested)) == ["g6.xlarge"]
    assert considered(unrequested)["g6.xlarge"]["usd_per_hour"] == pytest.approx(4 * G6_XL)
    assert nodepool(unrequested)["spec"]["limits"] == {"nvidia.com/gpu": "4"}


def test_a_request_only_bigger_types_hold_sizes_the_nodes_by_cpu() -> None:
    """4 pods at k = 2 requesting 6 vCPUs: a g6.4xlarge (16 vCPUs) holds min(2, 2) = 2, so 2 nodes = 2.6464
    USD/hour, below a g6.2xlarge's 4 nodes of one (8 vCPUs; 3.9104) and the g6.12xlarge's 4.6016."""
    r = sliced(4, cpu=6.0)
    assert r.evidence["target_instance_type"] == "g6.4xlarge"
    ways = considered(r)
    assert ways["g6.4xlarge"]["usd_per_hour"] == pytest.approx(2 * G6_4XL)
    assert (ways["g6.2xlarge"]["pods_per_node"], ways["g6.2xlarge"]["nodes"]) == (1, 4)
    assert r.evidence["memory_request_gib_per_pod"] is None
