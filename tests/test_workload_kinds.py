"""Workload kinds from the top-level owner, carried from gpu_allocations through the rollup to the patches."""

from __future__ import annotations

import pyarrow as pa

from analysis.recommend.manifests import job_note, pod_patch
from analysis.spot import workload_kind
from analysis.states import StateRules
from tests.conftest import allocation_rows, sample_rows
from warehouse import rollup
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_MINUTES, GPU_SAMPLES


def test_the_rollup_carries_the_owner_kind_of_the_holder(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=50.0))
    rows = allocation_rows(minutes=range(5), pod="finetune-28931460-q7x2z", workload="finetune")
    append(lake, GPU_ALLOCATIONS, rows.append_column("owner_kind", pa.array(["CronJob"] * rows.num_rows)))
    rollup.refresh(lake, StateRules())
    got = lake.scan(GPU_MINUTES).collect().sort("ts")
    held = got.filter(got["holders"] > 0)
    assert set(held["owner_kind"].to_list()) == {"CronJob"}
    assert got.filter(got["holders"] == 0)["owner_kind"].null_count() == got.height - held.height


def test_the_owner_kind_decides_before_the_name() -> None:
    assert workload_kind("ml", "finetune", owner_kind="CronJob") == ("training", "owner kind CronJob")
    assert workload_kind("data", "embeddings", owner_kind="CronJob") == ("batch", "owner kind CronJob")
    assert workload_kind("serve", "chat-train-api", owner_kind="Deployment") == ("inference", "owner kind Deployment")
    assert workload_kind("research", "jupyter-alice", owner_kind="StatefulSet") == (
        "notebook",
        "owner kind StatefulSet",
    )
    assert workload_kind("search", "vector-db", owner_kind="StatefulSet") == ("service", "owner kind StatefulSet")
    assert workload_kind("ml", "llama", owner_kind="PyTorchJob") == ("training", "owner kind PyTorchJob")
    assert workload_kind("rl", "sweep", owner_kind="RayCluster") == ("training", "owner kind RayCluster")
    assert workload_kind("ml", "chat", owner_kind="InferenceService") == ("inference", "owner kind InferenceService")
    assert workload_kind("ml", "moe-pretrain") == ("training", "name heuristic (no owner known)")
    assert workload_kind("ml", "exporter", owner_kind="DaemonSet") == ("inference", "name heuristic (no owner known)")
    assert workload_kind("ml", "llama", {"ml/*": "batch"}, "PyTorchJob") == ("batch", "configured (ml/*)")


def test_a_patch_targets_the_cronjob_template_not_a_finished_run() -> None:
    patch = pod_patch("training", "ml", "finetune", {"nodeSelector": {"pool": "spot"}}, "CronJob")
    assert patch == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "finetune", "namespace": "ml"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"nodeSelector": {"pool": "spot"}}}}}},
    }
    assert job_note("training", "CronJob") == ()
    assert pod_patch("notebook", "r", "nb", {}, "StatefulSet")["kind"] == "StatefulSet"
    assert pod_patch("training", "ml", "llama", {})["kind"] == "Job"
