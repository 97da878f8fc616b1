"""Recommendations (analysis.recommend, gpuledger.recommending, `gpuledger recommend`): each kind's builder on a
small hand-made fleet (tests/recommend_inputs.py) with its savings computed by hand, the demo fleet through
`gpuledger recommend` showing every kind, every emitted file validated (kubernetes-validate, the Karpenter CRD
schema, the MIG catalog), identical files on a re-run, and untrusted names that cannot inject anything."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis import recommend
from analysis.recommend import names as k8s_names
from analysis.recommend import usage
from analysis.recommend.files import render
from analysis.recommend.packing import what_if
from analysis.window import Window
from gpuledger import recommending
from tests.demo_fleet import Demo
from tests.recommend_inputs import A100, CATALOG, H100, L4, Fleet, price, recommendations_of
from tests.test_recommend_plan import assert_consistent
from warehouse.lake import Lake
from warehouse.schema import GPU_MINUTES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
K8S_VERSION = "1.30.0"


def kinds(result: recommend.RecommendationSet) -> set[str]:
    return {r.kind for r in result.items}


def test_gpu_count_two_of_four_gpus_idle() -> None:
    f = Fleet(10)
    f.node("n1", "p5.48xlarge", "spot", H100, 8, "h100")
    for i in range(4):
        f.gpu(
            "n1",
            f"GPU-{i}",
            util=90.0 if i < 2 else 0.0,
            mem_gib=40 if i < 2 else 0.5,
            total_gib=80,
            pod=("team-a", "trainer-0", "pytorch", "trainer"),
        )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"gpu-count"}
    (r,) = recommendations_of("gpu-count", inputs)
    # 2 spare GPUs x 10 h x the p5.48xlarge spot GPU-hour price, x 730 / 10 window hours
    assert r.savings_usd_month == pytest.approx(2 * 10 * price("p5.48xlarge", "spot", H100) * 73, rel=1e-9)
    assert r.savings_usd_month == pytest.approx(2 * 55.04 * (1 - 0.52) / 8 * 730, rel=1e-9)
    assert (r.evidence["gpus_requested"], r.evidence["gpus_used"]) == (4, 2)
    (m,) = r.manifests
    assert m.patch and m.obj["kind"] == "Job"
    assert m.obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "pytorch", "resources": {"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 2}}}
    ]
    assert "AWS spot estimate" in r.price_source


def test_mig_two_small_replicas_share_one_h100() -> None:
    f = Fleet(24)
    f.node("n1", "p5.48xlarge", "spot", H100, 8, "h100-serve")
    for i in range(2):
        f.gpu(
            "n1",
            f"GPU-{i}",
            util=5.0,
            mem_gib=8,
            total_gib=80,
            pod=("serve", f"embed-7d9f8b6c5d-{i}x2k4", "embed", "embed"),
        )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"mig"}
    (r,) = recommendations_of("mig", inputs)
    # 2 GPUs -> one GPU with 2x 1g.10gb: 1 freed x spot GPU-hour price x 730
    assert r.savings_usd_month == pytest.approx(price("p5.48xlarge", "spot", H100) * 730, rel=1e-6)
    cm, patch = r.manifests
    config = yaml.safe_load(cm.obj["data"]["config.yaml"])
    assert config["mig-configs"]["gpuledger-h100-serve"][0] == {
        "devices": [0],
        "mig-enabled": True,
        "mig-devices": {"1g.10gb": 2},
    }
    limits = patch.obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": None, "nvidia.com/mig-1g.10gb": 1}
    assert patch.obj["kind"] == "Deployment"


def test_time_slicing_low_duty_inference() -> None:
    f = Fleet(10)
    f.node("n1", "g6.12xlarge", "spot", L4, 4, "l4")
    for i in range(4):
        f.gpu(
            "n1",
            f"GPU-{i}",
            util=10.0,
            mem_gib=2.4,
            total_gib=24,
            pod=("search", f"autocomplete-5d9f8b6c5d-{i}abcd", "app", "autocomplete"),
        )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"time-slicing"}
    (r,) = recommendations_of("time-slicing", inputs)
    # k = min(max 4, floor(0.8 / 0.10) = 8, floor(24 / (2.4 x 1.1)) = 9) = 4
    assert r.evidence["replicas_per_gpu"] == 4
    # 40 GPU-hours x (1 - 1/4) x price x 730 / 10
    assert r.savings_usd_month == pytest.approx(40 * 0.75 * price("g6.12xlarge", "spot", L4) * 73, rel=1e-9)
    cm = r.manifests[0].obj
    assert yaml.safe_load(cm["data"]["l4-timesliced"])["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]


def test_gpu_model_notebook_moves_from_h100_to_l40s() -> None:
    f = Fleet(10)
    f.node("n1", "p5.48xlarge", "on-demand", H100, 8, "h100")
    f.gpu(
        "n1", "GPU-0", util=30.0, mem_gib=20, total_gib=80, pod=("research", "jupyter-ann-0", "notebook", "jupyter-ann")
    )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"gpu-model"}
    (r,) = recommendations_of("gpu-model", inputs)
    # compute 0.3 x 1.15 x 989.5 = 341 bf16 TFLOPS <= L40S 362.05 (L4 121 and A10G 125 are too small); 23 GiB <= 48;
    # p5.48xlarge's 192 vCPUs / 2048 GiB per 8 GPUs = 24 vCPUs, 256 GiB: g6e.xlarge (4, 32) is too small, g6e.8xlarge
    # (32, 256) is the cheapest L40S that fits
    assert r.evidence["target_instance_type"] == "g6e.8xlarge"
    assert r.evidence["compute_need_tflops"] == pytest.approx(341.4)
    assert (r.evidence["vcpus_per_gpu_need"], r.evidence["host_memory_gib_per_gpu_need"]) == (24, 256)
    assert r.savings_usd_month == pytest.approx(10 * (55.04 / 8 - 4.52856) * 73, rel=1e-6)


def test_spot_pool_for_replicated_inference() -> None:
    f = Fleet(10)
    for node in ("n1", "n2"):  # 8 replicas on each node: serving is eligible only on more than one node
        f.node(node, "p5.48xlarge", "on-demand", H100, 8, "h100-llm")
        for i in range(8):
            f.gpu(
                node,
                f"GPU-{node}-{i}",
                util=60.0,
                mem_gib=60,
                total_gib=80,
                pod=("llm", f"chat-7d9f8b6c5d-{node}x{i}", "chat", "chat"),
            )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"spot"}
    (r,) = recommendations_of("spot", inputs)
    od, sp = 55.04 / 8, 55.04 * (1 - 0.52) / 8
    gross_month = (od - sp) * 160 * 73
    # bucket 4 (>20%): 0.25 per node-month x 20 node-hours / 10 h = 0.5 interruptions/month, each restarting one
    # node for 120 + 300 + 300 s = 0.2 h at the node price 26.4192 USD/node-hour
    loss_month = 0.5 * 1 * 0.2 * 55.04 * (1 - 0.52)
    assert r.savings_usd_month == pytest.approx(gross_month - loss_month, rel=1e-6)
    (shown,) = r.evidence["candidates"]
    assert (shown["nodes"], shown["node_hours"], shown["nodes_restarted"]) == (2, 20.0, 1)
    assert shown["interruption_cost_usd_month"] == pytest.approx(loss_month, abs=1e-4)  # the report rounds to 4
    assert (shown["image_pull_s"], shown["warm_up_s"], shown["restart_overhead_s"]) == (300.0, 300.0, 120.0)
    assert r.evidence["assumption_values"]["image_pull_s"] == 300.0
    pool, patch = r.manifests
    assert pool.obj["spec"]["limits"] == {"nvidia.com/gpu": "16"}  # room for the 2 nodes the replicas ran on
    assert pool.obj["metadata"]["name"] == "h100-llm-spot"
    assert patch.obj["spec"]["template"]["spec"]["nodeSelector"] == {"karpenter.sh/nodepool": "h100-llm-spot"}


def test_autoscaling_drops_an_empty_node() -> None:
    f = Fleet(10)
    for n in ("n1", "n2"):
        f.node(n, "g6.12xlarge", "spot", L4, 4, "l4")
    for i in range(4):
        f.gpu(
            "n1", f"GPU-a{i}", util=95.0, mem_gib=20, total_gib=24, pod=("ml", "trainer-0", "pytorch", f"trainer-{i}")
        )
        f.gpu("n2", f"GPU-b{i}", util=0.0, mem_gib=0.3, total_gib=24)
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"autoscaling"}
    (r,) = recommendations_of("autoscaling", inputs)
    assert (r.evidence["min_nodes"], r.evidence["max_nodes"]) == (1, 2)  # ceil(4/4), ceil(4 x 1.2 / 4)
    # 2 nodes observed for 10 h, 1 needed: 10 node-hours x 4 GPUs x price x 730 / 10
    assert r.savings_usd_month == pytest.approx(10 * 4 * price("g6.12xlarge", "spot", L4) * 73, rel=1e-6)
    nodepool, ca = r.manifests
    assert nodepool.obj["spec"]["limits"] == {"nvidia.com/gpu": "8"}
    assert ca.obj["data"]["nodes"] == "1:2:l4"


def test_idle_reclaim_notebook_idle_for_30_hours() -> None:
    f = Fleet(30)
    f.node("n1", "p4de.24xlarge", "on-demand", A100, 8, "a100")
    f.gpu(
        "n1", "GPU-0", util=0.0, mem_gib=60, total_gib=80, pod=("research", "jupyter-bob-0", "notebook", "jupyter-bob")
    )
    inputs = f.inputs()
    assert kinds(recommend.build(inputs)) == {"idle-reclaim"}
    (r,) = recommendations_of("idle-reclaim", inputs)
    # idle 30 h in a row; scaled to zero after 24 h saves 6 GPU-hours x 27.44705 / 8, x 730 / 30
    assert r.savings_usd_month == pytest.approx(6 * 27.44705 / 8 * 730 / 30, rel=1e-6)
    assert r.evidence["cost_so_far_usd"] == pytest.approx(30 * 27.44705 / 8, abs=0.01)
    assert r.manifests[0].obj["spec"] == {"replicas": 0}
    assert r.manifests[0].obj["kind"] == "StatefulSet"


def test_mig_time_slicing_and_gpu_model_are_alternatives_in_registry_order() -> None:
    f = Fleet(24)
    f.node("n1", "p5.48xlarge", "spot", H100, 8, "h100-serve")
    for i in range(2):
        f.gpu("n1", f"GPU-{i}", util=5.0, mem_gib=8, total_gib=80, pod=("serve", f"embed-{i}", "embed", "embed"))
    inputs = f.inputs()
    alone = {kind: recommendations_of(kind, inputs) for kind in ("mig", "time-slicing", "gpu-model")}
    assert all(alone.values()), alone  # each would apply on its own (the later ones would even save more)
    assert kinds(recommend.build(inputs)) == {"mig"}
    assert kinds(recommend.build(replace(inputs, mig_fit={}))) == {"time-slicing"}


def test_cli_recommend_on_the_demo_fleet(demo: Demo) -> None:
    assert demo.cli.exit_code == 0, demo.cli.output
    plan = recommend.build_plan(demo.recs)
    assert f"plan: ${plan.savings_usd_month:,.2f} per month (the node-hours it removes x their price) from " in (
        demo.cli.stdout
    )
    assert "idle-reclaim" in demo.cli.stdout
    assert "┃ confidence ┃ expected " in demo.cli.stdout
    assert "warning:" not in demo.cli.stderr
    assert (demo.out / "README.md").read_text().startswith("# gpuledger recommendations")
    assert {p.name for p in demo.out.iterdir()} == {"README.md", "index.json", "serve-use1", "train-use1"}
    applied_kinds = set()
    for cp in plan.clusters:
        kinds_here = {a.rec.kind for a in cp.applied}
        applied_kinds |= kinds_here
        names = {p.name for p in (demo.out / cp.folder).iterdir()}
        assert names == {f"{k}.yaml" for k in kinds_here} | {"README.md", "index.json"}
        index = json.loads((demo.out / cp.folder / "index.json").read_text())
        assert [(r["kind"], r["confidence"], r["expected_savings_usd_month"]) for r in index["recommendations"]] == [
            (a.rec.kind, round(a.rec.confidence, 3), round(a.expected_savings_usd_month, 2)) for a in cp.applied
        ]
    assert applied_kinds == set(recommend.KINDS)
    top = json.loads((demo.out / "index.json").read_text())
    assert top["savings_usd_month"] == round(plan.savings_usd_month, 2)


def test_demo_plan_gives_each_workload_one_change(demo: Demo) -> None:
    plan = recommend.build_plan(demo.recs)
    assert_consistent(plan)
    # on the demo, gpu-count ranks above the spot pool of the same Jobs: the pool goes without them
    (train,) = [cp for cp in plan.clusters if cp.cluster == "train-use1"]
    assert any(alt.rec.kind == "spot" for alt in train.alternatives)
    assert plan.savings_usd_month < demo.recs.savings_usd_month


def _pod_frame(runs: list[dict[str, Any]], start: dt.datetime) -> pl.DataFrame:
    keys = ("cluster", "node_group", "instance_type", "capacity_type", "namespace", "pod", "gpu", "cpu", "memory_gib")
    rows = [
        {**{k: r[k] for k in keys}, "bucket": start + dt.timedelta(hours=h)}
        for r in runs
        for first, end in r["hours"]
        for h in range(first, end)
    ]
    return pl.DataFrame(rows, schema_overrides={"cpu": pl.Float64, "memory_gib": pl.Float64})


def test_the_plans_packing_rebuilt_from_index_json_gives_its_savings(demo: Demo) -> None:
    """From each cluster's index.json alone: its pools and pods (today and after the plan) packed again with
    ``packing.what_if`` give the node-hours it lists, and its savings = node-hours removed x price per node-hour x
    730 / window hours - expected spot loss, where an autoscaled pool starts from its nodes seen and keeps its
    floor."""
    for folder in ("serve-use1", "train-use1"):
        index = json.loads((demo.out / folder / "index.json").read_text())
        nodes = index["nodes"]
        start = dt.datetime.fromisoformat(index["window"]["start"])
        pools = pl.DataFrame(nodes["pools"]).drop("price_source")
        packed = what_if(pools, _pod_frame(nodes["pods_today"], start), _pod_frame(nodes["pods_after_plan"], start))
        expected = 0.0
        for row in nodes["nodes"]:
            cluster, group, itype, capacity = row["pool"].split("/")
            mine = packed.nodes.filter(
                (pl.col("cluster") == cluster) & (pl.col("node_group") == group) & (pl.col("instance_type") == itype)
                & (pl.col("capacity_type") == capacity)
            )  # fmt: skip
            today = float(mine["nodes_before"].sum())
            assert today == row["node_hours_packed_today"], row["pool"]
            after_by_hour = {
                (b - start) // dt.timedelta(hours=1): n for b, n in mine.select("bucket", "nodes_after").rows()
            }
            floor = row["autoscaled_min_nodes"]
            if floor is None:
                after, before = float(sum(after_by_hour.values())), today
            else:
                hours = range(int(nodes["window_hours"]))
                after, before = float(sum(max(floor, after_by_hour.get(h, 0)) for h in hours)), row["node_hours_seen"]
            assert after == row["node_hours_after_plan"], row["pool"]
            expected += (before - after) * row["usd_per_node_hour"] * nodes["month_factor"]
        loss = sum(r["banked"]["spot_loss_usd_month"] for r in index["recommendations"])
        assert index["savings_usd_month"] == pytest.approx(expected - loss, abs=0.01 * len(index["recommendations"]))
        assert index["savings_usd_month"] > 0


def test_every_kind_appears_on_the_demo_fleet(demo: Demo) -> None:
    recs = demo.recs
    for kind in recommend.KINDS:
        found = recs.of_kind(kind)
        assert found and all(r.savings_usd_month > 0 for r in found), kind
    # where the simulator planted the waste
    assert any(r.target["workload"] == "embed-api" for r in recs.of_kind("mig"))
    assert any(r.target["workload"] == "autocomplete" for r in recs.of_kind("time-slicing"))
    assert any(str(r.target["workload"]).startswith("jupyter-") for r in recs.of_kind("idle-reclaim"))
    assert recs.warnings == ()
    scores = [round(r.score, 6) for r in recs.items]  # ranked on 6 places: ties must not hang on summation order
    assert scores == sorted(scores, reverse=True)
    assert recommend.ranked(reversed(recs.items), recommend.KINDS) == recs.items
    for r in recs.items:  # expected savings per unit of disruption, not savings
        assert r.score == pytest.approx(r.savings_usd_month * r.confidence / r.disruption_units)


def test_refresh_false_writes_nothing(demo: Demo) -> None:
    assert demo.files_after == demo.files_before


def test_rerunning_gives_identical_files(demo: Demo, tmp_path: Path) -> None:
    first = {p.relative_to(demo.out).as_posix(): p.read_bytes() for p in demo.out.rglob("*") if p.is_file()}
    plan = recommend.build_plan(demo.recs)
    assert {name: text.encode() for name, text in render(plan).items()} == first
    again = tmp_path / "again"
    shutil.copytree(demo.out, again)
    (again / "spot.yaml").write_text("from the layout before cluster folders\n")
    (again / "old-cluster").mkdir()
    (again / "old-cluster" / "index.json").write_text("{}\n")
    second = {p.relative_to(again).as_posix(): p.read_bytes() for p in recommending.export(plan, again)}
    assert second == first
    assert {p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()} == set(first)


def test_cli_recommend_needs_out_and_data(cli: Callable[..., Result], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    Lake(empty, create=True)
    result = cli("recommend", "--warehouse", str(empty), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: warehouse {empty} holds no GPU samples yet")
    result = cli("recommend", "--warehouse", str(empty))
    assert result.exit_code == 2 and "Missing option '--out'" in result.stderr


NASTY = st.one_of(
    st.sampled_from(
        [
            "ok-name",
            "x\nkind: Secret",
            "a: b",
            "$(rm -rf /)",
            "'; kubectl delete ns kube-system; '",
            "{{evil}}",
            "---",
            "UPPER",
            "a" * 70,
            "tab\tname",
            "ns\x00null",
            "#comment",
            "x|y",
        ]
    ),
    st.text(min_size=1, max_size=20),
)


def _inputs(namespace: str, workload: str, container: str, group: str) -> recommend.RecommendInputs:
    window = Window(T0, T0 + dt.timedelta(hours=48))
    nodes = pl.DataFrame(
        {
            "date": [T0.date()],
            "cluster": ["c1"],
            "node": ["n1"],
            "instance_type": ["p5.48xlarge"],
            "capacity_type": ["on-demand"],
            "region": ["us-east-1"],
            "gpu_model": [H100],
            "gpu_count": [8],
            "labels": [json.dumps({"karpenter.sh/nodepool": group})],
        }
    )
    dev = {
        "cluster": "c1", "node": "n1", "gpu_model": H100, "namespace": namespace, "workload": workload,
        "pod": f"{workload}-0", "container": container, "minutes": 2880, "observed_minutes": 2880,
        "busy_p95": 0.9, "busy_p99": 0.9, "duty_p95": 0.9, "peak_gib": 70.0, "fb_total_gib": 80.0, "first_seen": T0,
        "last_seen": T0 + dt.timedelta(hours=48), "split_by": "",
    }  # fmt: skip
    devices = pl.DataFrame([{**dev, "gpu_uuid": f"GPU-{i}", "active_minutes": 2880 if i == 0 else 0} for i in range(2)])
    groups = pl.DataFrame(
        {
            "cluster": ["c1", "c1"],
            "node": ["n1", "n1"],
            "namespace": [namespace, None],
            "workload": [workload, None],
            "state": ["idle_held", "unallocated"],
            "gpu_hours": [96.0, 288.0],
            "cost_usd": [96.0 * 6.88, 288.0 * 6.88],
            "price_source": ["test\nprice", "test price"],
        }
    )
    demand = pl.DataFrame(
        {
            "cluster": ["c1"] * 2,
            "node": ["n1"] * 2,
            "bucket": [T0, T0 + dt.timedelta(minutes=10)],
            "held_gpus": [2.0, 2.0],
            "gpus": [8.0, 8.0],
        }
    )
    streaks = pl.DataFrame(
        {
            "cluster": ["c1"],
            "namespace": [namespace],
            "workload": [workload],
            "start": [T0],
            "end": [T0 + dt.timedelta(hours=30)],
            "minutes": [1800],
            "gpu_minutes": [1800],
            "observed_gpu_minutes": [1800],
            "split_by": [""],
        }
    )
    return recommend.RecommendInputs(
        window=window, groups=groups, nodes=nodes, devices=devices, demand=demand, streaks=streaks,
        mig_fit={}, spot={}, catalog=CATALOG,
    )  # fmt: skip


def _names(obj: Any) -> list[tuple[str, Any]]:
    out = []
    if isinstance(obj, dict):
        meta = obj.get("metadata")
        if isinstance(meta, dict):
            out += [("name", meta.get("name")), ("namespace", meta.get("namespace"))]
        for k, v in obj.items():
            if k in ("name", "nodeSelector") and isinstance(v, str):
                out.append(("name", v))
            out += _names(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _names(v)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespace=NASTY, workload=NASTY, container=NASTY, group=NASTY)
def test_untrusted_names_never_inject(namespace: str, workload: str, container: str, group: str) -> None:
    result = recommend.build(_inputs(namespace, workload, container, group))
    for r in result.items:
        for m in r.manifests:
            for what, value in _names(m.obj):
                if value is not None:
                    assert k8s_names.is_dns_subdomain(value) or k8s_names.is_label_value(value), (what, value)
    plan = recommend.build_plan(result)
    files = render(plan)
    applied = {cp.folder: [a.rec for a in cp.applied] for cp in plan.clusters}
    for name, text in files.items():
        if name.endswith(".yaml"):
            folder, _, file = name.rpartition("/")
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
            expected = []
            for r in applied[folder]:
                for m in r.manifests:
                    if r.kind == file.removesuffix(".yaml") and m.obj not in expected:
                        expected.append(m.obj)
            assert docs == expected  # nothing parsed that was not emitted
            for line in text.splitlines():
                assert "\x00" not in line and "\r" not in line
    json.loads(files["index.json"])
    bad = [v for v in (namespace, workload) if not k8s_names.is_dns_label(v) and not k8s_names.is_dns_subdomain(v)]
    if bad or not k8s_names.is_dns_label(container):
        assert result.warnings, "an invalid name must be skipped with a warning"
    assert render(recommend.build_plan(result)) == files


@pytest.mark.parametrize("batches", [2, 5])
def test_device_usage_in_batches_gives_the_same_rows(sim_warehouse: Path, batches: int) -> None:
    window = Window(dt.datetime(2026, 11, 17, 6, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    minutes = usage.read(Lake(sim_warehouse).scan(GPU_MINUTES, start=window.start, end=window.end), window)
    whole = usage.device_usage(minutes)
    split = usage.device_usage(minutes, batches)
    keys = usage.DEVICE_KEYS
    assert whole.height > 0
    assert_frame_equal(split.sort(keys, nulls_last=True), whole.sort(keys, nulls_last=True))


def test_the_window_folded_from_row_groups_gives_what_a_scan_gives(sim_warehouse: Path) -> None:
    """``Lake.batches`` (categoricals from the Parquet dictionaries, one row group at a time) and ``Lake.scan``
    (strings, one frame) feed the same passes the same minutes."""
    lake = Lake(sim_warehouse)
    window = Window(dt.datetime(2026, 11, 17, 6, tzinfo=dt.UTC), dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    batches = list(lake.batches(GPU_MINUTES, start=window.start, end=window.end, columns=usage.READ_COLUMNS))
    assert len(batches) > 1 and all(b.schema["pod"] == pl.Categorical() for b in batches)
    assert min(b["ts"].min() for b in batches if b.height) >= window.start
    assert max(b["ts"].max() for b in batches if b.height) < window.end
    folded = usage.fold(batches)
    scanned = usage.read(lake.scan(GPU_MINUTES, start=window.start, end=window.end), window)
    assert folded.held.height == scanned.held.height > 0
    pairs = [
        (usage.device_usage(folded, 3), usage.device_usage(scanned), usage.DEVICE_KEYS),
        (usage.held_demand(folded), usage.held_demand(scanned), ["cluster", "node", "bucket"]),
        (
            usage.idle_streaks(folded, 30),
            usage.idle_streaks(scanned, 30),
            ["cluster", "namespace", "workload", "start"],
        ),
        (*usage.pod_hours(folded)[:1], usage.pod_hours(scanned)[0], ["gpu_uuid", "mig_instance_id", "bucket", "pod"]),
        (usage.pod_hours(folded)[1], usage.pod_hours(scanned)[1], ["cluster", "node", "bucket"]),
    ]
    for a, b, keys in pairs:
        assert a.height > 0
        assert_frame_equal(a.sort(keys, nulls_last=True), b.sort(keys, nulls_last=True), check_row_order=True)
