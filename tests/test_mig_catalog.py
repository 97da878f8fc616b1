"""The MIG catalog (analysis.mig.catalog) against real captures: the H200 NVML capture and its `nvidia-smi mig
-lgip/-lgipp`, GFD labels of a real H100 in MIG mode, `nvidia-smi -q -x` of real A100s in MIG mode, NVIDIA's
mig-parted configs."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from analysis.mig.catalog import MigGpu, NotMigCapable, UnknownGpuModel, UnknownMigProfile
from analysis.mig.pack import arrange
from tests.mig_minutes import CATALOG, H100, H200


def test_h200_catalog_equals_the_real_capture(fixtures: Path) -> None:
    static = json.loads((fixtures / "nvml-h200/nvml_static.json").read_text())
    device = static["devices"][0]
    infos = [p["info"] for p in device["gpu_instance_profiles"] if "name" in p["info"]]
    smi = (fixtures / "nvml-h200/nvidia_smi.txt").read_text()
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


def test_h100_catalog_matches_real_gfd_labels(fixtures: Path) -> None:
    labels = json.loads((fixtures / "mig-k8s/h100-mig-mixed-gfd-node-labels.json").read_text())
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
    assert arrange(gpu, [n for n, c in counts.items() for _ in range(c)]) is not None
    # GH100: the real H100 profiles have exactly the SM counts of the H200's same-geometry profiles, which is why the
    # catalog takes the other H100 SM counts (1g.20gb 26, 4g.40gb 64, 7g.80gb 132) from the H200 capture
    h200 = {p.nvml_profile: p.sm_count for p in CATALOG.gpu(H200).profiles}
    assert all(gpu.profile(name).sm_count == h200[gpu.profile(name).nvml_profile] for name in profiles)
    assert [(p.name, p.sm_count) for p in gpu.profiles if p.sm_source.startswith("derived")] == [
        ("1g.10gb+me", 16), ("1g.20gb", 26), ("4g.40gb", 64), ("7g.80gb", 132)
    ]  # fmt: skip


def test_a100_80gb_catalog_matches_the_real_nvidia_smi_xml(fixtures: Path) -> None:
    root = ET.parse(fixtures / "nvidia-smi-xml/a100-sxm4-80gb-mig.xml").getroot()
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
        assert arrange(gpu, ["1g.20gb"] * 4) is not None


def test_catalog_geometry_agrees_with_the_go_nvml_mock(fixtures: Path) -> None:
    model_of = {"a30_24gb": "A30", "a100_40gb": "A100-SXM4-40GB", "a100_80gb": "A100-SXM4-80GB",
                "h100_80gb": "H100 80GB HBM3", "h200_141gb": "H200", "b200_180gb": "B200"}  # fmt: skip
    with (fixtures / "mig/mig_gi_profiles_go_nvml_mock.csv").open() as handle:
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


def _mig_parted_configs(fixtures: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    files = sorted((fixtures / "mig/mig-parted").glob("*.yaml"))
    files.append(fixtures / "mig/gpu-operator-default-mig-parted-configmap.yaml")
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


def _targets(source: str, entry: dict[str, Any]) -> list[MigGpu]:
    names = set(entry["mig-devices"])
    flt = entry.get("device-filter")
    if flt is None:
        return [g for g in CATALOG.gpus if g.model in FILE_SCOPE[source] and names <= {p.name for p in g.profiles}]
    ids = {f.upper() for f in ([flt] if isinstance(flt, str) else flt)}
    return [g for g in CATALOG.gpus if ids & {i.upper() for i in g.pci_device_ids}]


def test_mig_parted_layouts_are_valid_in_the_catalog(fixtures: Path) -> None:
    checked: Counter[str] = Counter()
    for source, configs in _mig_parted_configs(fixtures):
        for config_name, entries in configs.items():
            for entry in entries:
                if not entry.get("mig-enabled") or not entry.get("mig-devices"):
                    continue
                for gpu in _targets(source, entry):
                    devices = entry["mig-devices"]
                    wanted = [name for name, count in devices.items() for _ in range(count)]
                    assert arrange(gpu, wanted) is not None, (source, config_name, gpu.model, devices)
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
            assert arrange(gpu, [p.name] * p.max_instances) is not None, (gpu.model, p.name)
            assert arrange(gpu, [p.name] * (p.max_instances + 1)) is None, (gpu.model, p.name)
            assert 0 < p.compute_fraction <= 1
            assert p.sm_source.split(":")[0] in {"real", "derived"}


def test_telemetry_names_map_to_the_catalog(fixtures: Path) -> None:
    prom = "".join(p.read_text() for p in sorted((fixtures / "dcgm-exporter").glob("*.prom")))
    seen = set(re.findall(r'modelName="([^"]+)"', prom))
    assert seen == {"NVIDIA A10G", "NVIDIA H100 80GB HBM3", "NVIDIA L4", "Tesla T4"}
    assert CATALOG.gpu("NVIDIA H100 80GB HBM3").model == "H100 80GB HBM3"
    assert CATALOG.gpu("NVIDIA A100-SXM4-40GB").model == "A100-SXM4-40GB"
    assert CATALOG.gpu("NVIDIA B200").model == "B200"
    assert CATALOG.gpu("NVIDIA A30").model == "A30"
    for model in ("NVIDIA A10G", "NVIDIA L4", "Tesla T4", "NVIDIA L40S", "Tesla V100-SXM2-16GB"):
        with pytest.raises(NotMigCapable, match=f"^GPU model {re.escape(model)} is not MIG-capable$"):
            CATALOG.gpu(model)
    with pytest.raises(UnknownGpuModel, match=r"'NVIDIA H100 NVL' is not in the MIG catalog"):
        CATALOG.gpu("NVIDIA H100 NVL")
    with pytest.raises(UnknownMigProfile, match=r"'5g\.50gb' does not exist on H100 80GB HBM3; its profiles: 1g"):
        CATALOG.gpu(H100).profile("5g.50gb")
