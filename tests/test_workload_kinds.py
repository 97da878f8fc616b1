"""Workload kinds from the top-level owner, carried from gpu_allocations through the rollup to the patches."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from analysis import daily, usage
from analysis.recommend.manifests import job_note, pod_patch
from analysis.spot import NAME_HEURISTIC, workload_kind
from analysis.states import StateRules
from tests.conftest import T0, allocation_rows, sample_rows
from tests.recommend_inputs import H100, Fleet, recommendations_of
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


def test_the_daily_owner_summary_names_each_workload_s_owner_kind(lake: Lake) -> None:
    append(lake, GPU_SAMPLES, sample_rows(util=50.0))
    rows = allocation_rows(minutes=range(5), pod="finetune-28931460-q7x2z", workload="finetune")
    append(lake, GPU_ALLOCATIONS, rows.append_column("owner_kind", pa.array(["CronJob"] * rows.num_rows)))
    rollup.refresh(lake, StateRules(), summaries=[daily.WORKLOAD_OWNERS])
    assert lake.parts(rollup.summary_table(daily.WORKLOAD_OWNERS))  # stored with the day's minutes
    got = rollup.summarized(lake, daily.WORKLOAD_OWNERS, T0, T0 + dt.timedelta(days=1))
    assert usage.owner_kinds(got).rows() == [("team-a", "finetune", "CronJob")]


def _two_node_job(owner_kind: str | None) -> Fleet:
    """ml/llama, one GPU on each of two on-demand p5.48xlarge nodes all day: by its name alone, inference."""
    f = Fleet(24)
    for i in range(2):
        f.node(f"p5-{i}", "p5.48xlarge", "on-demand", H100, 8, "h100")
        f.gpu(
            f"p5-{i}",
            f"GPU-{i}",
            util=60.0,
            mem_gib=40,
            total_gib=80,
            pod=("ml", f"llama-{i}", "main", "llama"),
            owner_kind=owner_kind,
        )
    return f


def test_spot_candidates_take_their_kind_from_the_owner_kind() -> None:
    inputs = _two_node_job("PyTorchJob").inputs()
    (candidate,) = inputs.spot["candidates"]
    assert (candidate["workload_kind"], candidate["kind_basis"]) == ("training", "owner kind PyTorchJob")
    assert candidate["reason"].startswith("job: eligible if it checkpoints")
    assert candidate["nodes_restarted"] == 2  # a job on 2 nodes restarts both, a service only the one
    (pool,) = recommendations_of("spot", inputs)
    (evidence,) = pool.evidence["candidates"]
    assert (evidence["workload_kind"], evidence["kind_basis"]) == ("training", "owner kind PyTorchJob")
    # without a stored owner the name decides, and the report and the recommendation still agree
    (guessed,) = _two_node_job(None).inputs().spot["candidates"]
    assert (guessed["workload_kind"], guessed["kind_basis"]) == ("inference", NAME_HEURISTIC)
    assert guessed["reason"].startswith("replicated inference") and guessed["nodes_restarted"] == 1
