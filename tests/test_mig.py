"""MIG fit and packing (analysis.mig): the catalog against real captures, golden fits and packings, properties.

Real inputs: the H200 NVML capture and its `nvidia-smi mig -lgip/-lgipp`, GFD labels of a real H100 in MIG mode,
`nvidia-smi -q -x` of real A100s in MIG mode, NVIDIA's mig-parted configs. Minute frames are built with the
warehouse's own `gpu_minutes` schema.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import random
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from analysis import mig
from analysis.errors import AnalysisError
from warehouse.schema import GPU_MINUTES

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
WEEK = 7 * 1440
H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
GIB = 1 << 30
P5_GPU_HOUR = 55.04 / 8  # p5.48xlarge us-east-1 on-demand / 8 GPUs (analysis/data/aws_nvidia_gpu_instance_types.csv)

CATALOG = mig.load_catalog()


# ------------------------------------------------------------------------------------------------------- helpers


def minutes(
    workload: str,
    model: str | None,
    n: int,
    util: Callable[[int], float | None],
    mem_gib: float | None,
    *,
    uuid: str | None = None,
    namespace: str = "ml",
    start: dt.datetime = T0,
    offsets: list[int] | None = None,
    **extra: Any,
) -> list[dict[str, Any]]:
    """``n`` consecutive held minutes (or the given minute ``offsets``) of one workload on one GPU."""
    steps = offsets if offsets is not None else list(range(n))
    return [
        {
            "ts": start + dt.timedelta(minutes=i),
            "cluster": "c1",
            "node": "node-1",
            "gpu_uuid": uuid or f"GPU-{workload}",
            "gpu_model": model,
            "samples": 6,
            "sm_active_mean": util(i),
            "fb_used_max_bytes": None if mem_gib is None else int(mem_gib * GIB),
            "fb_total_bytes": 80 * GIB,
            "namespace": namespace,
            "pod": f"{workload}-0",
            "workload": workload,
            "holders": 1,
            "state": "active",
            "source": "simulator",
            **extra,
        }
        for i in steps
    ]


def frame(rows: list[dict[str, Any]]) -> pl.LazyFrame:
    return pl.DataFrame(pa.Table.from_pylist(rows, schema=GPU_MINUTES.schema)).lazy()


def bucket_end(u: float, first: float = 0.001, ratio: float = 1.02) -> float:
    """Hand computation of VPA's percentile answer: the end of the exponential bucket holding ``u``."""
    i = math.floor(math.log(u * (ratio - 1) / first + 1, ratio))
    return first * (ratio ** (i + 1) - 1) / (ratio - 1)


def margin(days: float, compute_margin: float = 1.15) -> float:
    return 1 + (compute_margin - 1) * (1 + 1 / days)


def one(result: mig.MigFit, workload: str) -> dict[str, Any]:
    rows = result.workloads.filter(pl.col("workload") == workload).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def assert_no_nan(result: mig.MigFit) -> None:
    for df in (result.workloads, result.by_model):
        for name, dtype in df.schema.items():
            if dtype.is_float():
                assert not df[name].is_nan().any(), f"NaN in {name}"
    assert not math.isnan(result.savings_usd_month)


def fit_all(rows: list[dict[str, Any]], **assumptions: Any) -> mig.MigFit:
    return mig.mig_fit(
        frame(rows),
        prices={H100: P5_GPU_HOUR, H200: 10.0},
        price_sources={H100: "p5.48xlarge us-east-1 on-demand / 8", H200: "test price"},
        assumptions=mig.MigAssumptions(**assumptions),
    )


# ------------------------------------------------------------------------------------------- catalog vs sources


def test_h200_catalog_equals_the_real_capture(shared: Path) -> None:
    static = json.loads((shared / "fixtures/nvml-h200/nvml_static.json").read_text())
    device = static["devices"][0]
    infos = [p["info"] for p in device["gpu_instance_profiles"] if "name" in p["info"]]
    smi = (shared / "fixtures/nvml-h200/nvidia_smi.txt").read_text()
    placements = {
        int(m["id"]): ([int(s) for s in m["starts"].split(",")], int(m["size"]))
        for m in re.finditer(r"Profile ID\s+(?P<id>\d+) Placements? ?: \{(?P<starts>[\d,]+)\}:(?P<size>\d+)", smi)
    }
    assert len(placements) == 7
    captured = {
        info["name"].removeprefix("MIG "): (
            info["sliceCount"],
            info["memorySizeMB"],
            info["multiprocessorCount"],
            info["instanceCount"],
            placements[info["id"]],
        )
        for info in infos
    }
    assert set(captured) == {"1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"}

    gpu = CATALOG.gpu(device["nvmlDeviceGetName"])
    assert gpu.model == "H200"
    ours = {
        p.name: (p.slices, p.memory_mib, p.sm_count, p.max_instances, (list(p.placements), p.memory_slots))
        for p in gpu.profiles
    }
    assert ours == captured
    assert gpu.gpu_sms == device["nvmlDeviceGetNumGpuCores"] // 128 == 132
    pci = device["nvmlDeviceGetPciInfo"]["pciDeviceId"]
    assert f"0x{pci:08X}" in gpu.pci_device_ids
    assert all(p.sm_source.startswith("real") and p.memory_source.startswith("real") for p in gpu.profiles)
    # the nvidia-smi table agrees on memory: 16384 MiB = 16.00 GiB ... 143360 MiB = 140.00 GiB
    for name, gib in [("1g.18gb", "16.00"), ("1g.35gb", "32.50"), ("3g.71gb", "69.75"), ("7g.141gb", "140.00")]:
        assert re.search(rf"MIG {re.escape(name)}\s+\d+\s+\d+/\d+\s+{gib}", smi)
        assert f"{gpu.profile(name).memory_gib:.2f}" == gib


def test_h100_catalog_matches_real_gfd_labels(shared: Path) -> None:
    labels = json.loads((shared / "fixtures/mig-k8s/h100-mig-mixed-gfd-node-labels.json").read_text())
    gpu = CATALOG.gpu(labels["nvidia.com/gpu.product"])  # "NVIDIA-H100-80GB-HBM3", GFD's spelling
    assert gpu.model == "H100 80GB HBM3"
    assert [p.name for p in gpu.profiles] == [
        "1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"
    ]  # fmt: skip
    profiles = {m[1] for k in labels if (m := re.fullmatch(r"nvidia\.com/mig-(.+)\.count", k))}
    assert profiles == {"1g.10gb", "2g.20gb", "3g.40gb"}
    for name in profiles:
        p = gpu.profile(name)
        assert p.memory_mib == int(labels[f"nvidia.com/mig-{name}.memory"])
        assert p.sm_count == int(labels[f"nvidia.com/mig-{name}.multiprocessors"])
        assert p.slices == int(labels[f"nvidia.com/mig-{name}.slices.gi"])
        assert p.sm_source == p.memory_source == "real: gfd-h100"
    # the node's mig.config is all-balanced (1g.10gb x2, 2g.20gb, 3g.40gb): it must be arrangeable
    counts = {name: int(labels[f"nvidia.com/mig-{name}.count"]) for name in profiles}
    assert mig.arrange(gpu, [n for n, c in counts.items() for _ in range(c)]) is not None
    # GH100: the real H100 profiles have exactly the SM counts of the H200's same-geometry profiles, which is why the
    # catalog takes the other H100 SM counts (1g.20gb 26, 4g.40gb 64, 7g.80gb 132) from the H200 capture
    h200 = {p.nvml_profile: p.sm_count for p in CATALOG.gpu(H200).profiles}
    assert all(gpu.profile(name).sm_count == h200[gpu.profile(name).nvml_profile] for name in profiles)
    assert [(p.name, p.sm_count) for p in gpu.profiles if p.sm_source.startswith("derived")] == [
        ("1g.10gb+me", 16), ("1g.20gb", 26), ("4g.40gb", 64), ("7g.80gb", 132)
    ]  # fmt: skip


def test_a100_80gb_catalog_matches_the_real_nvidia_smi_xml(shared: Path) -> None:
    root = ET.parse(shared / "fixtures/nvidia-smi-xml/a100-sxm4-80gb-mig.xml").getroot()
    gpus = root.findall("gpu")
    assert gpus
    for g in gpus:
        gpu = CATALOG.gpu(g.findtext("product_name"))
        assert gpu.model == "A100-SXM4-80GB"
        assert "0x" + (g.findtext("pci/pci_device_id") or "") in gpu.pci_device_ids  # 20B210DE
        devices = g.findall("mig_devices/mig_device")
        sms = {int(d.findtext("device_attributes/shared/multiprocessor_count") or 0) for d in devices}
        mem = {int((d.findtext("fb_memory_usage/total") or "").split()[0]) for d in devices}
        assert (sms, mem, len(devices)) == ({14}, {19968}, 4)
        # 14 SMs, 19968 MiB, four per GPU: that is 1g.20gb (2g.20gb has 28 SMs and at most 3 per GPU)
        p = gpu.profile("1g.20gb")
        assert (p.sm_count, p.memory_mib, p.max_instances) == (14, 19968, 4)
        assert gpu.profile("2g.20gb").max_instances == 3
        assert mig.arrange(gpu, ["1g.20gb"] * 4) is not None


def test_catalog_geometry_agrees_with_the_go_nvml_mock(shared: Path) -> None:
    model_of = {"a30_24gb": "A30", "a100_40gb": "A100-SXM4-40GB", "a100_80gb": "A100-SXM4-80GB",
                "h100_80gb": "H100 80GB HBM3", "h200_141gb": "H200", "b200_180gb": "B200"}  # fmt: skip
    with (shared / "data/mig/mig_gi_profiles_go_nvml_mock.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    gpus = {g.model: g for g in CATALOG.gpus}
    for row in rows:
        gpu = gpus[model_of[row["var"]]]
        (p,) = [p for p in gpu.profiles if f"GPU_INSTANCE_PROFILE_{p.nvml_profile}" == row["profile_id"]]
        assert (p.slices, p.max_instances) == (int(row["slices"]), int(row["instances"])), (gpu.model, p.name)
        if p.memory_source.startswith("go-nvml-mock") or "go-nvml-mock agrees" in p.memory_source:
            assert p.memory_mib == int(row["mem_mb"]), (gpu.model, p.name)
    # the mock's H200 memory is nominal (18 GiB for 1g.18gb); the real H200 reports 16 GiB, and we use the real one
    assert gpus["H200"].profile("1g.18gb").memory_mib == 16384
    assert {g.model for g in CATALOG.gpus} == set(model_of.values())


def _mig_parted_configs(shared: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    files = sorted((shared / "data/mig/mig-parted").glob("*.yaml"))
    files.append(shared / "data/mig/gpu-operator-default-mig-parted-configmap.yaml")
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "mig-configs" in doc:
                yield path.name, doc["mig-configs"]
            elif doc and doc.get("kind") == "ConfigMap" and "config.yaml" in doc.get("data", {}):
                yield path.name, yaml.safe_load(doc["data"]["config.yaml"])["mig-configs"]


AMPERE = {"A100-SXM4-80GB", "A100-SXM4-40GB", "A30"}
HOPPER_BLACKWELL = {"H100 80GB HBM3", "H200", "B200"}
# An entry without a device filter applies to whatever GPU the node has; the two example files are written for one
# generation each (their comments say which), config-default.yaml for all.
FILE_SCOPE = {
    "config-default.yaml": AMPERE | HOPPER_BLACKWELL,
    "nvidia-mig-manager-example.yaml": AMPERE,
    "nvidia-mig-manager-example-hopper-blackwell.yaml": HOPPER_BLACKWELL,
    "gpu-operator-default-mig-parted-configmap.yaml": HOPPER_BLACKWELL,
}


def _targets(source: str, entry: dict[str, Any]) -> list[mig.MigGpu]:
    names = set(entry["mig-devices"])
    flt = entry.get("device-filter")
    if flt is None:
        return [g for g in CATALOG.gpus if g.model in FILE_SCOPE[source] and names <= {p.name for p in g.profiles}]
    ids = {f.upper() for f in ([flt] if isinstance(flt, str) else flt)}
    return [g for g in CATALOG.gpus if ids & {i.upper() for i in g.pci_device_ids}]


def test_mig_parted_layouts_are_valid_in_the_catalog(shared: Path) -> None:
    checked: Counter[str] = Counter()
    for source, configs in _mig_parted_configs(shared):
        for config_name, entries in configs.items():
            for entry in entries:
                if not entry.get("mig-enabled") or not entry.get("mig-devices"):
                    continue
                for gpu in _targets(source, entry):
                    devices = entry["mig-devices"]
                    wanted = [name for name, count in devices.items() for _ in range(count)]
                    assert mig.arrange(gpu, wanted) is not None, (source, config_name, gpu.model, devices)
                    if config_name.startswith("all-") and len(devices) == 1 and config_name != "all-balanced":
                        ((name, count),) = devices.items()
                        assert gpu.profile(name).max_instances == count, (source, config_name, gpu.model)
                    checked[gpu.model] += 1
    assert set(checked) == {g.model for g in CATALOG.gpus}, checked


def test_catalog_frame_lists_every_profile_with_its_sources() -> None:
    table = CATALOG.frame()
    assert table.height == sum(len(g.profiles) for g in CATALOG.gpus) == 40
    h200_3g = table.filter((pl.col("model") == "H200") & (pl.col("profile") == "3g.71gb")).row(0, named=True)
    assert (h200_3g["sm_count"], h200_3g["compute_fraction"], h200_3g["placements"]) == (60, 60 / 132, [0, 4])
    assert table.filter(pl.col("sm_source").str.starts_with("derived"))["model"].unique().sort().to_list() == [
        "A100-SXM4-40GB", "A100-SXM4-80GB", "A30", "B200", "H100 80GB HBM3"
    ]  # fmt: skip
    assert table.null_count().sum_horizontal().item() == 0


def test_every_profile_fills_its_max_count_and_no_more() -> None:
    for gpu in CATALOG.gpus:
        assert gpu.whole.slices == gpu.compute_slices
        assert gpu.whole.placements == (0,) and gpu.whole.memory_slots == gpu.memory_slots
        for p in gpu.profiles:
            assert all(s >= 0 and s + p.memory_slots <= gpu.memory_slots for s in p.placements), (gpu.model, p.name)
            assert mig.arrange(gpu, [p.name] * p.max_instances) is not None, (gpu.model, p.name)
            assert mig.arrange(gpu, [p.name] * (p.max_instances + 1)) is None, (gpu.model, p.name)
            assert 0 < p.compute_fraction <= 1
            assert p.sm_source.split(":")[0] in {"real", "derived"}


def test_telemetry_names_map_to_the_catalog(shared: Path) -> None:
    prom = "".join(p.read_text() for p in sorted((shared / "fixtures/dcgm-exporter").glob("*.prom")))
    seen = set(re.findall(r'modelName="([^"]+)"', prom))
    assert seen == {"NVIDIA A10G", "NVIDIA H100 80GB HBM3", "NVIDIA L4", "Tesla T4"}
    assert CATALOG.gpu("NVIDIA H100 80GB HBM3").model == "H100 80GB HBM3"
    assert CATALOG.gpu("NVIDIA A100-SXM4-40GB").model == "A100-SXM4-40GB"
    assert CATALOG.gpu("NVIDIA B200").model == "B200"
    assert CATALOG.gpu("NVIDIA A30").model == "A30"
    for model in ("NVIDIA A10G", "NVIDIA L4", "Tesla T4", "NVIDIA L40S", "Tesla V100-SXM2-16GB"):
        with pytest.raises(mig.NotMigCapable, match=f"^GPU model {re.escape(model)} is not MIG-capable$"):
            CATALOG.gpu(model)
    with pytest.raises(mig.UnknownGpuModel, match=r"'NVIDIA H100 NVL' is not in the MIG catalog"):
        CATALOG.gpu("NVIDIA H100 NVL")
    with pytest.raises(mig.UnknownMigProfile, match=r"'5g\.50gb' does not exist on H100 80GB HBM3; its profiles: 1g"):
        CATALOG.gpu(H100).profile("5g.50gb")


# --------------------------------------------------------------------------------------------------- golden fits


def test_p95_20pct_with_15gib_on_h100_fits_2g_20gb() -> None:
    """A week of minutes: 9 in 10 at 10% of the GPU, 1 in 10 at 20%; 15 GiB held. By hand:

    p95 = end of the bucket holding 0.20 = 0.05 x (1.02^82 - 1) = 0.20362 (the 20% minutes weigh ~10% > 5%);
    confidence = min(7 days, 10080 / 1440) = 7, margin = 1 + 0.15 x (1 + 1/7) = 1.1714 -> compute 0.2385;
    memory = 15 x 1.1 = 16.5 GiB.
    H100 profiles, smallest first (real GFD memory/SMs; 132 SMs in all):
      1g.10gb:  9.75 GiB < 16.5 -> fails on memory (and 16/132 = 0.121 < 0.2385 on compute)
      1g.20gb: 19.6 GiB holds it, but 26/132 = 0.197 < 0.2385 -> fails on compute
      2g.20gb: 19.6 GiB >= 16.5 and 32/132 = 0.2424 >= 0.2385 -> fits.
    """
    result = fit_all(minutes("svc", H100, WEEK, lambda i: 0.2 if i % 10 == 0 else 0.1, 15.0))
    row = one(result, "svc")
    p95 = 0.05 * (1.02**82 - 1)
    assert row["util_pct_p95"] == pytest.approx(100 * p95) == pytest.approx(20.362, abs=1e-3)
    assert row["confidence"] == pytest.approx(7.0)
    assert row["compute_demand"] == pytest.approx(p95 * (1 + 0.15 * 8 / 7)) == pytest.approx(0.2385, abs=1e-4)
    assert row["memory_demand_gib"] == pytest.approx(16.5)
    assert (row["profile"], row["fits"], row["reason"]) == ("2g.20gb", True, None)
    gpu = CATALOG.gpu(H100)
    assert gpu.profile("1g.10gb").memory_gib == 9.75 < 16.5
    assert gpu.profile("1g.20gb").memory_gib > 16.5 and gpu.profile("1g.20gb").compute_fraction < row["compute_demand"]
    assert gpu.profile("2g.20gb").compute_fraction == 32 / 132 >= row["compute_demand"]
    assert row["peak_mem_gib"] == 15.0 and row["gpu_hours"] == pytest.approx(168.0)
    assert_no_nan(result)


def test_memory_bound_workloads() -> None:
    """Light compute (5%) but 30 GiB on an H100: 33 GiB needed, 2g.20gb has 19.6 -> 3g.40gb (39.4 GiB).
    92 GiB on an H200: 101.2 GiB needed, the largest sub-GPU profile (3g/4g.71gb) has 69.75 -> the whole GPU."""
    result = fit_all(
        minutes("embed", H100, WEEK, lambda i: 0.05, 30.0) + minutes("big", H200, WEEK, lambda i: 0.05, 92.0)
    )
    embed = one(result, "embed")
    assert embed["memory_demand_gib"] == pytest.approx(33.0)
    assert embed["compute_demand"] == pytest.approx(bucket_end(0.05) * margin(7))
    assert embed["compute_demand"] < 0.07
    assert (embed["profile"], embed["fits"]) == ("3g.40gb", True)
    big = one(result, "big")
    assert (big["profile"], big["fits"]) == ("7g.141gb", False)
    assert big["reason"] == "needs the whole GPU (memory: needs 101.2 GiB, largest sub-GPU profile 69.8 GiB)"


def test_compute_bound_workloads() -> None:
    """5 GiB each on H100s. p95 40%: 0.40036 x 1.1714 = 0.469 > 3g.40gb's 60/132 = 0.455, <= 4g.40gb's 64/132 =
    0.485 -> 4g.40gb. p95 50%: 0.5100 x 1.1714 = 0.597 > 0.485 -> the whole GPU."""
    result = fit_all(
        minutes("train", H100, WEEK, lambda i: 0.40, 5.0) + minutes("heavy", H100, WEEK, lambda i: 0.50, 5.0)
    )
    train = one(result, "train")
    assert train["compute_demand"] == pytest.approx(bucket_end(0.40) * margin(7)) == pytest.approx(0.469, abs=1e-3)
    assert (train["profile"], train["fits"]) == ("4g.40gb", True)
    heavy = one(result, "heavy")
    demand = bucket_end(0.50) * margin(7)
    assert (heavy["profile"], heavy["fits"]) == ("7g.80gb", False)
    assert (
        heavy["reason"] == f"needs the whole GPU (compute: needs {demand:.2f} of a GPU, largest sub-GPU profile 0.48)"
    )
    assert heavy["reason"] == "needs the whole GPU (compute: needs 0.60 of a GPU, largest sub-GPU profile 0.48)"


def test_l4_workload_is_not_mig_capable(shared: Path) -> None:
    prom = (shared / "fixtures/dcgm-exporter/l4_aws_full_help.prom").read_text()
    (model,) = set(re.findall(r'modelName="([^"]+)"', prom))
    result = fit_all(minutes("infer", model, 600, lambda i: 0.1, 4.0))
    row = one(result, "infer")
    assert (row["profile"], row["fits"], row["reason"]) == (None, False, "GPU model NVIDIA L4 is not MIG-capable")
    assert result.layouts == () and result.gpus_now == 0 and result.savings_usd_month == 0.0
    assert_no_nan(result)


def test_unknown_and_missing_gpu_models_say_so_and_never_nan() -> None:
    rows = minutes("a", "NVIDIA Quantum Q1", 60, lambda i: 0.1, 1.0) + minutes("b", None, 60, lambda i: 0.1, 1.0)
    result = fit_all(rows)
    assert one(result, "a")["reason"].startswith("GPU model 'NVIDIA Quantum Q1' is not in the MIG catalog")
    assert (
        one(result, "b")["reason"] == "GPU model unknown: the telemetry names no gpu_model, so MIG fit is not assessed"
    )
    assert not result.workloads["fits"].any()
    assert_no_nan(result)


def test_missing_readings_say_so() -> None:
    result = fit_all(
        minutes("blind", H100, 60, lambda i: None, 1.0, util_mean_pct=None)
        + minutes("nomem", H100, 60, lambda i: 0.1, None)
        + minutes("nan", H100, 60, lambda i: float("nan"), 1.0, util_mean_pct=12.0)
    )
    blind = one(result, "blind")
    assert (blind["fits"], blind["reason"], blind["confidence"]) == (False, "no utilization readings in the window", 0)
    assert blind["compute_demand"] is None and blind["util_pct_p95"] is None
    assert one(result, "nomem")["reason"] == "no memory readings in the window"
    # a NaN sm_active is no reading: util_mean_pct (12%) stands in
    assert one(result, "nan")["util_pct_p95"] == pytest.approx(100 * bucket_end(0.12))
    assert_no_nan(result)


def test_an_empty_window_gives_an_empty_result() -> None:
    result = fit_all([])
    assert result.workloads.is_empty() and result.workloads.columns == list(mig.WORKLOAD_COLUMNS)
    assert result.by_model.is_empty()
    assert (result.gpus_now, result.gpus_needed, result.savings_usd_month, result.layouts) == (0, 0, 0.0, ())
    report = result.to_report()
    assert report["workloads"] == [] and report["savings_usd_month"] == 0.0


def test_only_observed_held_minutes_count() -> None:
    base = minutes("svc", H100, WEEK, lambda i: 0.1, 5.0)
    noise = minutes("svc", H100, 600, lambda i: 1.0, 79.0, start=T0 + dt.timedelta(days=8), state="no_data")
    noise += [{**row, "workload": None} for row in minutes("svc", H100, 600, lambda i: 1.0, 79.0, uuid="GPU-x")]
    clean, noisy = fit_all(base).workloads, fit_all(base + noise).workloads
    assert_frame_equal(clean, noisy)


def test_minutes_on_a_mig_instance_count_as_its_share_of_the_gpu() -> None:
    """sm_active on a 3g.40gb instance is relative to the instance: 0.5 of it is 0.5 x 60/132 = 0.227 of the GPU."""
    rows = minutes("onmig", H100, WEEK, lambda i: 0.5, 10.0, mig_profile="3g.40gb", mig_instance_id=1)
    row = one(fit_all(rows), "onmig")
    assert row["util_pct_p95"] == pytest.approx(100 * bucket_end(0.5 * 60 / 132))
    assert row["gpu_hours"] == pytest.approx(168 * 60 / 132)
    # 0.2300 x 1.1714 = 0.269: more than 2g.20gb's 0.242, so 3g.40gb
    assert row["compute_demand"] == pytest.approx(0.2694, abs=1e-4)
    assert row["profile"] == "3g.40gb"


def test_recent_minutes_weigh_more() -> None:
    """A day at 80% then a day at 10%. With a 24 h half-life the older day weighs (1/2 - 1/4) / (1 - 1/4) = 1/3
    of the total, so p60 lands on 10%; with a half-life of ~forever both days weigh 1/2 and p60 lands on 80%."""
    rows = minutes("shift", H100, 2 * 1440, lambda i: 0.8 if i < 1440 else 0.1, 5.0)
    decayed = one(fit_all(rows, percentile=0.6), "shift")
    flat = one(fit_all(rows, percentile=0.6, half_life=dt.timedelta(days=100_000)), "shift")
    assert decayed["util_pct_p95"] == pytest.approx(100 * bucket_end(0.1))
    assert flat["util_pct_p95"] == pytest.approx(100 * bucket_end(0.8))
    assert one(fit_all(rows, percentile=0.7), "shift")["util_pct_p95"] == pytest.approx(100 * bucket_end(0.8))


def test_short_histories_get_a_bigger_margin() -> None:
    """Confidence = min(span days, minutes / 1440): half an hour -> 1/48 -> margin 1 + 0.15 x 49 = 8.35, so a
    10% workload needs 0.85 of a GPU; with a week of the same minutes it needs 0.119 and fits 1g.10gb."""
    result = fit_all(minutes("new", H100, 30, lambda i: 0.1, 2.0) + minutes("old", H100, WEEK, lambda i: 0.1, 2.0))
    new, old = one(result, "new"), one(result, "old")
    assert new["confidence"] == pytest.approx(1 / 48) and old["confidence"] == pytest.approx(7)
    assert new["compute_demand"] == pytest.approx(bucket_end(0.1) * 8.35)
    assert (new["profile"], old["profile"]) == ("7g.80gb", "1g.10gb")
    # sparse minutes over a long span: the count, not the span, bounds confidence
    sparse = fit_all(minutes("sparse", H100, 0, lambda i: 0.1, 2.0, offsets=list(range(0, WEEK, 60))))
    assert one(sparse, "sparse")["confidence"] == pytest.approx(168 / 1440)


def test_bad_assumptions_are_refused_with_the_reason() -> None:
    with pytest.raises(mig.InvalidMigAssumption, match=r"percentile must be in \(0, 1\], got 95"):
        mig.MigAssumptions(percentile=95)
    with pytest.raises(mig.InvalidMigAssumption, match="margins are multipliers >= 1"):
        mig.MigAssumptions(compute_margin=0.15)
    assert issubclass(mig.InvalidMigAssumption, AnalysisError)


# ------------------------------------------------------------------------------------------------------ packing


def _packing_workloads() -> list[dict[str, Any]]:
    """Six H100 workloads, each on its own GPU today:
    ml/a, ml/b, ml/c: 30 GiB, 5% -> 3g.40gb; ml/d: 15 GiB, p95 20% -> 2g.20gb; ml/e, ml/f: 5 GiB, 5% -> 1g.10gb."""
    rows = []
    for name in "abc":
        rows += minutes(name, H100, WEEK, lambda i: 0.05, 30.0)
    rows += minutes("d", H100, WEEK, lambda i: 0.2 if i % 10 == 0 else 0.1, 15.0)
    for name in "ef":
        rows += minutes(name, H100, WEEK, lambda i: 0.05, 5.0)
    return rows


def test_packing_known_workloads_onto_h100s() -> None:
    """By hand: a 3g.40gb only fits at slot 0 or 4, and at most twice per GPU, so the three 3g need two GPUs.
    First-fit decreasing: GPU 0 takes a and b (3g at 0 and 4: all 8 slots, 6 of 7 slices); GPU 1 takes c (3g),
    then d (2g.20gb) and e, f (1g.10gb) in the free half: 3 + 2 + 1 + 1 = 7 slices, mig-parted's all-balanced.
    Six GPUs held today, two needed: four freed, x 6.88 USD/GPU-hour x 730 h = 20,089.60 USD a month."""
    result = fit_all(_packing_workloads())
    assert dict(result.workloads.select("workload", "profile").iter_rows()) == {
        "a": "3g.40gb", "b": "3g.40gb", "c": "3g.40gb", "d": "2g.20gb", "e": "1g.10gb", "f": "1g.10gb"
    }  # fmt: skip
    layouts = [[(p.profile, p.start, p.workload) for p in layout.placements] for layout in result.layouts]
    assert layouts == [
        [("3g.40gb", 0, "a"), ("3g.40gb", 4, "b")],
        [("2g.20gb", 0, "d"), ("1g.10gb", 2, "e"), ("1g.10gb", 3, "f"), ("3g.40gb", 4, "c")],
    ]
    assert [layout.slices_used for layout in result.layouts] == [6, 7]
    assert result.layouts[1].mig_devices() == {"2g.20gb": 1, "1g.10gb": 2, "3g.40gb": 1}
    assert (result.gpus_now, result.gpus_needed, result.gpus_freed) == (6, 2, 4)
    assert result.savings_usd_month == pytest.approx(4 * 6.88 * 730) == pytest.approx(20089.60)
    by_model = result.by_model.row(0, named=True)
    assert by_model["price_source"] == "p5.48xlarge us-east-1 on-demand / 8"
    report = result.to_report()
    assert {"workloads", "gpus_now", "gpus_needed", "savings_usd_month"} <= set(report)
    assert set(mig.REPORT_COLUMNS) <= set(report["workloads"][0])
    assert report["savings_usd_month"] == 20089.6
    assert report["assumptions"]["percentile"] == 0.95 and report["assumptions"]["half_life_hours"] == 24.0
    assert report["assumptions"]["price_sources"] == {H100: "p5.48xlarge us-east-1 on-demand / 8"}


def test_workloads_sharing_gpus_today_free_nothing() -> None:
    """Two 3g.40gb workloads that already share one GPU (different minutes) need one GPU: nothing freed."""
    rows = minutes("a", H100, WEEK, lambda i: 0.05, 30.0, uuid="GPU-shared")
    rows += minutes("b", H100, WEEK, lambda i: 0.05, 30.0, uuid="GPU-shared", start=T0 + dt.timedelta(days=7))
    result = mig.mig_fit(frame(rows), prices={}, price_sources={})  # no price needed when nothing is freed
    assert (result.gpus_now, result.gpus_needed, result.gpus_freed, result.savings_usd_month) == (1, 1, 0, 0.0)


def test_replicas_held_at_once_each_get_an_instance() -> None:
    rows = minutes("inf", H100, WEEK, lambda i: 0.05, 5.0, uuid="GPU-1")
    rows += minutes("inf", H100, WEEK, lambda i: 0.05, 5.0, uuid="GPU-2")
    result = fit_all(rows)
    row = one(result, "inf")
    assert (row["replicas"], row["gpus_held"], row["profile"]) == (2, 2, "1g.10gb")
    assert [(p.profile, p.replica) for p in result.layouts[0].placements] == [("1g.10gb", 0), ("1g.10gb", 1)]
    assert (result.gpus_now, result.gpus_needed) == (2, 1)


def test_freeing_gpus_without_a_price_is_refused() -> None:
    with pytest.raises(mig.MissingGpuPrice, match=r"no GPU-hour price for NVIDIA H100 80GB HBM3, of which MIG"):
        mig.mig_fit(frame(_packing_workloads()), prices={}, price_sources={})


# --------------------------------------------------------------------------------------------------- properties


@st.composite
def pack_inputs(draw: st.DrawFn) -> tuple[mig.MigGpu, list[mig.PackItem]]:
    gpu = draw(st.sampled_from(CATALOG.gpus))
    names = draw(st.lists(st.sampled_from([p.name for p in gpu.profiles]), max_size=24))
    return gpu, [mig.PackItem(n, "ns", f"w{i}") for i, n in enumerate(names)]


@settings(max_examples=200, deadline=None)
@given(pack_inputs())
def test_packing_respects_slices_counts_placements_and_overlap(case: tuple[mig.MigGpu, list[mig.PackItem]]) -> None:
    gpu, items = case
    layouts = mig.pack(gpu, items)
    placed = [p for layout in layouts for p in layout.placements]
    assert sorted((p.workload, p.profile) for p in placed) == sorted((i.workload, i.profile) for i in items)
    for layout in layouts:
        assert layout.placements, "no empty GPUs"
        assert layout.slices_used <= gpu.compute_slices
        for name, count in layout.mig_devices().items():
            assert count <= gpu.profile(name).max_instances
        used = [0] * gpu.memory_slots
        for p in layout.placements:
            profile = gpu.profile(p.profile)
            assert p.start in profile.placements and p.size == profile.memory_slots
            for slot in range(p.start, p.start + p.size):
                used[slot] += 1
        assert max(used, default=0) <= 1, layout
    assert len(layouts) >= math.ceil(sum(gpu.profile(i.profile).slices for i in items) / gpu.compute_slices)


utilizations = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(utilizations, st.floats(0.5, 75.0), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_a_higher_percentile_never_picks_a_smaller_profile(
    utils: list[float], mem_gib: float, p1: float, p2: float
) -> None:
    low, high = sorted((p1, p2))
    rows = minutes("w", H100, 3 * 1440, lambda i: utils[i % len(utils)], mem_gib)
    a, b = one(fit_all(rows, percentile=low), "w"), one(fit_all(rows, percentile=high), "w")
    assert a["util_pct_p95"] <= b["util_pct_p95"]
    gpu = CATALOG.gpu(H100)
    assert gpu.rank(a["profile"]) <= gpu.rank(b["profile"])
    assert not (b["fits"] and not a["fits"])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4 * 1440), min_size=1, max_size=400, unique=True),
    st.data(),
)
def test_more_history_never_lowers_confidence(offsets: list[int], data: st.DataObject) -> None:
    offsets.sort()
    kept = [o for o in offsets if data.draw(st.booleans())] or offsets[:1]
    conf = {}
    for label, steps in (("some", kept), ("all", offsets)):
        rows = minutes("w", H100, 0, lambda i: 0.3, 4.0, offsets=steps)
        conf[label] = mig.demand(frame(rows))["confidence"][0]
    assert 0 < conf["some"] <= conf["all"]


@settings(max_examples=15, deadline=None)
@given(utilizations, st.integers(0, 2**32 - 1))
def test_demand_is_deterministic(utils: list[float], seed: int) -> None:
    rows = minutes("a", H100, 2 * 1440, lambda i: utils[i % len(utils)], 7.0)
    rows += minutes("b", H200, 1440, lambda i: utils[-1 - i % len(utils)], 20.0, uuid="GPU-b")
    first = mig.demand(frame(rows))
    assert_frame_equal(first, mig.demand(frame(rows)))
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    assert_frame_equal(first, mig.demand(frame(shuffled)))


def test_peaks_known_in_advance_skip_compute_for_memory_bound_workloads() -> None:
    """Given each workload's peak memory up front (the report passes it from its minute groups), a workload whose
    memory alone rules out every sub-GPU profile gets no compute histogram, and the same answer as without it."""
    rows = minutes("embed", H100, WEEK, lambda i: 0.05, 30.0) + minutes("big", H200, WEEK, lambda i: 0.05, 92.0)
    peaks = frame(rows).group_by("namespace", "workload", "gpu_model").agg(pl.col("fb_used_max_bytes").max()).collect()
    plain = fit_all(rows)
    skipped = mig.mig_fit(
        frame(rows),
        prices={H100: P5_GPU_HOUR, H200: 10.0},
        price_sources={H100: "p5.48xlarge us-east-1 on-demand / 8", H200: "test price"},
        peaks=peaks,
    )
    for name in ("embed", "big"):
        a, b = one(plain, name), one(skipped, name)
        assert (a["profile"], a["fits"], a["reason"]) == (b["profile"], b["fits"], b["reason"])
    assert one(skipped, "big")["compute_demand"] is None and one(skipped, "big")["util_pct_p95"] is None
    assert one(skipped, "embed")["compute_demand"] == pytest.approx(one(plain, "embed")["compute_demand"])
    assert (skipped.gpus_now, skipped.gpus_needed, skipped.savings_usd_month) == (
        plain.gpus_now,
        plain.gpus_needed,
        plain.savings_usd_month,
    )
