"""gpu-model moves respect the target (issue 14, point 5): the GPU catalog states what each model supports, a
workload is moved only to a GPU with the precision it is assumed to need (bf16 where its GPU has bf16), and only to
an instance type with at least the vCPUs and memory per GPU the pod requests (the current instance type's share where
a request is not stored); every rejected target says why. Hand-made
fleets (tests/recommend_inputs.py) over the shipped catalogs."""

from __future__ import annotations

import pytest

from analysis.gpu_specs import GpuCatalogError, _spec, gpu_spec, gpu_specs
from analysis.instance_resources import resources_of
from analysis.recommend.model import Recommendation
from tests.recommend_inputs import L4, Fleet, recommendations_of

A10G = "NVIDIA A10G"
T4 = "NVIDIA T4"
V100 = "NVIDIA V100"


def _moves(itype: str, model: str, gpus: int, util: float, mem_gib: float) -> list[Recommendation]:
    f = Fleet(24)
    f.node("n1", itype, "on-demand", model, gpus, "serve")
    f.gpu("n1", "GPU-0", util=util, mem_gib=mem_gib, total_gib=80, pod=("serve", "api-0", "api", "api"))
    return recommendations_of("gpu-model", f.inputs())


def test_catalog_states_support_and_gives_tflops_only_where_supported() -> None:
    t4, l4, a100 = gpu_spec(T4), gpu_spec(L4), gpu_spec("NVIDIA A100-SXM4-80GB")
    assert t4 is not None and l4 is not None and a100 is not None
    assert not t4.supports("bf16") and t4.dense_tflops("bf16") is None  # 65 is T4's FP16 figure, not bf16
    assert t4.dense_tflops("fp16") == 65
    assert (l4.dense_tflops("bf16"), l4.dense_tflops("fp8"), l4.dense_tflops("tf32")) == (121, 242.5, 60)
    assert not a100.supports("fp8") and a100.dense_tflops("tf32") == 156
    for spec in gpu_specs().values():
        assert spec.tflops_source and spec.support_source, spec.gpu_model


def test_catalog_refuses_a_supported_precision_without_tflops() -> None:
    row = {
        "gpu_model": "NVIDIA X",
        "karpenter_gpu_name": "x",
        "bf16": "true",
        "fp8": "false",
        "tf32": "false",
        "dense_fp16_tflops": "10",
        "dense_bf16_tflops": "",
        "dense_fp8_tflops": "",
        "dense_tf32_tflops": "",
        "tflops_source": "s",
        "support_source": "s",
    }
    with pytest.raises(GpuCatalogError, match="NVIDIA X: bf16 support and TFLOPS disagree"):
        _spec(row)


def test_instance_cpu_and_memory() -> None:
    g4 = resources_of("g4dn.xlarge")
    g5 = resources_of("g5.12xlarge")
    assert g4 is not None and g5 is not None
    assert (g4.vcpus, g4.memory_gib) == (4, 16)
    assert g5.per_gpu(4) == (12, 48)
    assert resources_of("a2-highgpu-1g") is not None
    assert resources_of("no-such.type") is None


def test_bf16_a10g_workload_is_never_sent_to_t4() -> None:
    # Before: g5.12xlarge -> g4dn.xlarge (T4, no bf16, 4 vCPUs for a 12-vCPU-per-GPU share)
    (r,) = _moves("g5.12xlarge", A10G, 4, util=10.0, mem_gib=4)
    assert r.evidence["target_gpu_model"] == L4
    assert r.evidence["target_instance_type"] == "g6.4xlarge"  # 16 vCPUs, 64 GiB >= 12, 48 per GPU
    assert r.evidence["precision"] == "bf16"
    rejected = {t["instance_type"]: t["why"] for t in r.evidence["rejected_targets"]}
    assert rejected["g4dn.xlarge"].startswith("no bf16 support")
    assert "4 vCPUs per GPU < 12 needed" in rejected["g4dn.xlarge"]
    assert "16 GiB of host memory per GPU < 48 needed" in rejected["g4dn.xlarge"]
    assert rejected["g4dn.4xlarge"].startswith("no bf16 support")  # would fit and be cheaper but for bf16
    assert all(t["why"] for t in r.evidence["rejected_targets"])
    assert any("assumed to need bf16" in a for a in r.assumptions)


def test_bf16_l4_workload_is_never_sent_to_t4() -> None:
    # Before: g6.xlarge (0.8048 USD) -> g4dn.xlarge (T4, 0.526 USD; the same 4 vCPUs and 16 GiB)
    moves = _moves("g6.xlarge", L4, 1, util=10.0, mem_gib=4)
    assert [r for r in moves if r.evidence["target_gpu_model"] == T4] == []


def test_pod_needing_more_cpu_per_gpu_than_g4dn_xlarge_is_not_sent_there() -> None:
    # V100 has no bf16, so T4 is a fair fp16 target; p3.2xlarge gives 8 vCPUs and 61 GiB per GPU
    (r,) = _moves("p3.2xlarge", V100, 1, util=20.0, mem_gib=8)
    assert r.evidence["precision"] == "fp16"
    assert r.evidence["target_instance_type"] == "g4dn.4xlarge"  # 16 vCPUs, 64 GiB
    rejected = {t["instance_type"]: t["why"] for t in r.evidence["rejected_targets"]}
    assert rejected["g4dn.xlarge"] == "4 vCPUs per GPU < 8 needed; 16 GiB of host memory per GPU < 61 needed"
    assert rejected["g4dn.2xlarge"] == "32 GiB of host memory per GPU < 61 needed"
    assert r.evidence["cpu_memory_basis"].startswith("assumed: pod requests are not stored")
    assert any("pod requests are not stored" in a for a in r.assumptions)


def _requesting(cpu: float | None, memory_gib: float | None) -> list[Recommendation]:
    """An A10G pod on g5.12xlarge (the instance share: 12 vCPUs, 48 GiB per GPU) with its stored requests."""
    f = Fleet(24)
    f.node("n1", "g5.12xlarge", "on-demand", A10G, 4, "serve")
    f.gpu(
        "n1",
        "GPU-0",
        util=10.0,
        mem_gib=4,
        total_gib=24,
        pod=("serve", "api-0", "api", "api"),
        cpu_request=cpu,
        memory_request_bytes=None if memory_gib is None else int(memory_gib * 2**30),
    )
    return recommendations_of("gpu-model", f.inputs())


def test_pod_whose_requests_fit_is_moved_where_the_instance_share_would_not_fit() -> None:
    # 2 vCPUs and 8 GiB requested: g6.xlarge (4 vCPUs, 16 GiB) fits, though the 12 vCPUs / 48 GiB share would not
    (r,) = _requesting(2.0, 8.0)
    assert (r.evidence["target_gpu_model"], r.evidence["target_instance_type"]) == (L4, "g6.xlarge")
    assert (r.evidence["vcpus_per_gpu_need"], r.evidence["host_memory_gib_per_gpu_need"]) == (2.0, 8.0)
    assert r.evidence["cpu_memory_basis"] == "pod requests: the most of any of the workload's pods, per GPU it holds"
    assert "pod's stored requests" in r.risk
    assert any("the pod's stored requests per GPU it holds" in a and "2 vCPUs, 8 GiB" in a for a in r.assumptions)
    # the same pod without stored requests is held to the share, which g6.xlarge does not offer
    (share,) = _requesting(None, None)
    assert share.evidence["target_instance_type"] == "g6.4xlarge"
    rejected = {t["instance_type"]: t["why"] for t in share.evidence["rejected_targets"]}
    assert rejected["g6.xlarge"] == "4 vCPUs per GPU < 12 needed; 16 GiB of host memory per GPU < 48 needed"


def test_pod_whose_requests_exceed_the_target_share_is_not_sent_there_and_the_request_is_named() -> None:
    (r,) = _requesting(6.0, 20.0)
    assert r.evidence["target_instance_type"] == "g6.2xlarge"  # 8 vCPUs, 32 GiB
    rejected = {t["instance_type"]: t["why"] for t in r.evidence["rejected_targets"]}
    assert rejected["g6.xlarge"] == (
        "4 vCPUs per GPU < 6 needed (requested by the pod); "
        "16 GiB of host memory per GPU < 20 needed (requested by the pod)"
    )


def test_a_request_not_stored_falls_back_to_the_instance_share_and_says_so() -> None:
    # CPU requested (2 vCPUs), memory not: memory is held to g5.12xlarge's 48 GiB per GPU
    (r,) = _requesting(2.0, None)
    assert r.evidence["target_instance_type"] == "g6.4xlarge"  # 16 vCPUs, 64 GiB
    assert (r.evidence["vcpus_per_gpu_need"], r.evidence["host_memory_gib_per_gpu_need"]) == (2.0, 48.0)
    assert r.evidence["cpu_memory_basis"] == (
        "vCPUs: pod requests; host memory assumed: its request is not stored; the current instance type "
        "g5.12xlarge's per GPU"
    )
    rejected = {t["instance_type"]: t["why"] for t in r.evidence["rejected_targets"]}
    assert rejected["g6.xlarge"] == "16 GiB of host memory per GPU < 48 needed"
    assert "where the pod's request is not stored" in r.risk
