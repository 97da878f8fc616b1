"""dcgm-exporter: every real capture in tests/fixtures/dcgm-exporter, real Prometheus answers, a real HTTP server."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from collector.dcgm import (
    DcgmExporterReader,
    DcgmPoint,
    metrics_url,
    parse_exposition,
    rows_from_points,
)
from collector.errors import SourceRejected, SourceUnreachable
from collector.rows import Rows
from collector.workloads import workload_from_pod
from warehouse.ingest import append, conform
from warehouse.lake import Lake
from warehouse.schema import GPU_ALLOCATIONS, GPU_SAMPLES

MIB = 1 << 20
SCRAPED_AT = dt.datetime(2026, 3, 10, 3, 41, 29, tzinfo=dt.UTC)
UNREACHABLE_FIX = "check the URL and that dcgm-exporter is running (default port 9400)"
NOT_METRICS_FIX = "point the URL at dcgm-exporter's metrics endpoint, e.g. http://NODE:9400/metrics"

H100 = "h100x8_eks_pod_labels.prom"
A100 = "a100_mig_legacy_labels.prom"
L4 = "l4_aws_full_help.prom"
T4 = "t4_a10g_datadog_fixture.prom"
H100_MODEL = "NVIDIA H100 80GB HBM3"
H100_GPUS = (  # gpu="0".."7" of h100x8_eks_pod_labels.prom, in that order
    "GPU-c4529c8d-69c4-b61d-e0bc-7b2460096005",
    "GPU-bc5610b9-79c8-fedd-8899-07539c7f868a",
    "GPU-fbc2c554-4d37-8938-0032-f923bad0f716",
    "GPU-a65a773d-52bb-bcc1-a8ee-f78c3faa2e2d",
    "GPU-82e45d1b-1618-559f-144c-eab51545030b",
    "GPU-39e28159-8c62-ee71-64db-b748edd61e15",
    "GPU-e64d69ca-b4b3-59b2-e78c-94f26c4db365",
    "GPU-04d228d3-3b5a-3534-f5cf-969706647d56",
)
A100_GPU = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
L4_GPU = "GPU-c2f76b33-7953-256e-8f33-1343419b1a1c"
T4_GPU_A = "GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e"
T4_GPU_B = "GPU-9ef1b6d0-3643-5dd7-b823-c0ec20dcf2d5"
VLLM_POD = "vllm-agg-0-vllmdecodeworker-s65j5"


@dataclass(frozen=True)
class Expected:
    gpus: dict[str, tuple[int, str | None, str]]
    """gpu_uuid -> (gpu index, model, node)."""
    mig: set[tuple[str, str, int]]
    """(gpu_uuid, profile, instance id) of every MIG instance."""
    holders: set[tuple[str, str | None, str, str | None, str]]
    """(gpu_uuid, namespace, pod, container, workload) of every allocation."""

    @property
    def sample_rows(self) -> int:
        return len(self.gpus) + len(self.mig)


EXPECTED = {
    # Read off the file by hand: 8 GPUs (gpu="0".."7"), all modelName="NVIDIA H100 80GB HBM3", Hostname="gpu-node-1",
    # no GPU_I_* labels; only gpu="0" carries container="main",namespace="dynamo-workload",pod=VLLM_POD (and an
    # empty pod_uid). The capture is cut short: GPU_TEMP, POWER_USAGE and GPU_UTIL for all 8, MEM_COPY_UTIL for 6.
    H100: Expected(
        gpus={uuid: (i, H100_MODEL, "gpu-node-1") for i, uuid in enumerate(H100_GPUS)},
        mig=set(),
        holders={(H100_GPUS[0], "dynamo-workload", VLLM_POD, "main", "vllm-agg-0-vllmdecodeworker")},
    ),
    # One A100 (gpu="0", Hostname="ub20-a100-k8s") in the old label set: no modelName, no pci_bus_id. Its device
    # metrics have no GPU_I_* labels; four more lines carry GPU_I_PROFILE="1g.5gb",GPU_I_ID="13". No pod labels.
    A100: Expected(
        gpus={A100_GPU: (0, None, "ub20-a100-k8s")},
        mig={(A100_GPU, "1g.5gb", 13)},
        holders=set(),
    ),
    # One NVIDIA L4 (gpu="0", Hostname="i-030791dc5a37cd257") with HELP/TYPE for every family; no MIG, no pods.
    L4: Expected(
        gpus={L4_GPU: (0, "NVIDIA L4", "i-030791dc5a37cd257")},
        mig=set(),
        holders=set(),
    ),
    # Three UUIDs: two Tesla T4 on two hosts (424773df46e0 with the usual fields; 551bdf382151 with FB_TOTAL and
    # a FB_RESERVED its `# NOTE` says was copied from FB_TOTAL), and one line (DRAM_ACTIVE) of UUID="GPU-abc", an
    # NVIDIA A10G on ip-11111 held by container="ray-worker",namespace="ray-llm",pod="ray-1111111". Fourteen more
    # samples have no labels at all.
    T4: Expected(
        gpus={
            T4_GPU_A: (0, "Tesla T4", "424773df46e0"),
            T4_GPU_B: (0, "Tesla T4", "551bdf382151"),
            "GPU-abc": (0, "NVIDIA A10G", "ip-11111"),
        },
        mig=set(),
        holders={("GPU-abc", "ray-llm", "ray-1111111", "ray-worker", "ray-1111111")},
    ),
}


@pytest.fixture
def dcgm_dir(fixtures: Path) -> Path:
    return fixtures / "dcgm-exporter"


def read(dcgm_dir: Path, name: str) -> str:
    return (dcgm_dir / name).read_text()


def parse(text: str, scraped_at: dt.datetime = SCRAPED_AT) -> Rows:
    return parse_exposition(text, cluster="c1", scraped_at=scraped_at)


def samples(rows: Rows) -> list[dict[str, object]]:
    return rows.samples.to_pylist()


def by_series(rows: Rows) -> dict[tuple[str, int | None], dict[str, object]]:
    out = {(row["gpu_uuid"], row["mig_instance_id"]): row for row in samples(rows)}
    assert len(out) == rows.samples.num_rows, "one timestamp per series expected here"
    return out  # type: ignore[return-value]


_LINE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def raw_values(text: str) -> dict[tuple[str, int | None], dict[str, float]]:
    """The file's values per (UUID, GPU_I_ID), read with a regex, independently of the code under test."""
    out: dict[tuple[str, int | None], dict[str, float]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        mig = labels.get("GPU_I_ID")
        out.setdefault((labels["UUID"], int(mig) if mig else None), {})[match.group(1)] = float(match.group(3))
    return out


# --- every capture -------------------------------------------------------------------------------------------------


def test_every_prom_capture_is_described_here(dcgm_dir: Path) -> None:
    assert {p.name for p in dcgm_dir.glob("*.prom")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_yields_its_gpus_models_mig_instances_and_pods(dcgm_dir: Path, name: str) -> None:
    expected = EXPECTED[name]
    rows = parse(read(dcgm_dir, name))
    gpus = {row["gpu_uuid"]: (row["gpu_index"], row["gpu_model"], row["node"]) for row in samples(rows)}
    mig = {
        (row["gpu_uuid"], row["mig_profile"], row["mig_instance_id"])
        for row in samples(rows)
        if row["mig_instance_id"] is not None
    }
    holders = {
        (a["gpu_uuid"], a["namespace"], a["pod"], a["container"], a["workload"]) for a in rows.allocations.to_pylist()
    }
    assert (gpus, mig, holders) == (expected.gpus, expected.mig, expected.holders)
    assert rows.samples.num_rows == expected.sample_rows
    assert rows.allocations.num_rows == len(expected.holders)
    assert set(rows.samples.column("ts").to_pylist()) == {SCRAPED_AT}
    assert set(rows.samples.column("source").to_pylist()) == {"dcgm-exporter"}
    assert rows.nodes.num_rows == 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_conforms_to_both_tables(dcgm_dir: Path, name: str) -> None:
    rows = parse(read(dcgm_dir, name))
    assert conform(GPU_SAMPLES, rows.samples).equals(rows.samples)
    assert conform(GPU_ALLOCATIONS, rows.allocations).equals(rows.allocations)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_values_are_in_warehouse_units(dcgm_dir: Path, name: str) -> None:
    text = read(dcgm_dir, name)
    raw = raw_values(text)
    for key, row in by_series(parse(text)).items():
        values = raw[key]
        used, free = values.get("DCGM_FI_DEV_FB_USED"), values.get("DCGM_FI_DEV_FB_FREE")
        assert row["fb_used_bytes"] == (None if used is None else int(used) * MIB)
        if used is not None and free is not None:
            total = int(used + free + values.get("DCGM_FI_DEV_FB_RESERVED", 0)) * MIB
            assert row["fb_total_bytes"] == total
        elif "DCGM_FI_DEV_FB_TOTAL" in values:
            assert row["fb_total_bytes"] == int(values["DCGM_FI_DEV_FB_TOTAL"]) * MIB
        else:
            assert row["fb_total_bytes"] is None
        energy = values.get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
        assert row["energy_j"] == (None if energy is None else pytest.approx(energy / 1000))
        assert row["power_w"] == (
            pytest.approx(values["DCGM_FI_DEV_POWER_USAGE"], rel=1e-6) if "DCGM_FI_DEV_POWER_USAGE" in values else None
        )
        util = values.get("DCGM_FI_DEV_GPU_UTIL")
        engine = values.get("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
        if util is None and engine is not None:
            util = 100 * engine  # no GPU_UTIL (MIG, dcgm-exporter issue 216): the engine activity stands in
        assert row["util_pct"] == (None if util is None else pytest.approx(util, rel=1e-6))
        assert row["temp_c"] == values.get("DCGM_FI_DEV_GPU_TEMP")
        assert row["sm_clock_mhz"] == values.get("DCGM_FI_DEV_SM_CLOCK")


def test_hand_read_values_of_each_capture(dcgm_dir: Path) -> None:
    a100 = by_series(parse(read(dcgm_dir, A100)))
    gpu, instance = a100[(A100_GPU, None)], a100[(A100_GPU, 13)]
    assert gpu["fb_used_bytes"] == 4845 * MIB  # FB_USED 4845
    assert gpu["fb_total_bytes"] == (35690 + 4845) * MIB  # FB_FREE 35690, no FB_RESERVED in this old label set
    assert gpu["energy_j"] == pytest.approx(319159.391)  # TOTAL_ENERGY_CONSUMPTION 319159391 mJ
    assert (gpu["power_w"], gpu["temp_c"], gpu["sm_clock_mhz"]) == (pytest.approx(409.692), 61, 1215)
    assert gpu["util_pct"] == pytest.approx(99.5630)  # no DCGM_FI_DEV_GPU_UTIL: 100 x GR_ENGINE_ACTIVE 0.995630
    assert instance["util_pct"] == pytest.approx(99.5687)  # the MIG instance's own, 100 x 0.995687
    assert gpu["sm_active"] == pytest.approx(0.995630)
    assert instance["sm_active"] == pytest.approx(0.995687)  # the MIG instance's own GR_ENGINE_ACTIVE
    assert [instance[c] for c in ("fb_used_bytes", "power_w", "energy_j", "temp_c")] == [None] * 4

    l4 = by_series(parse(read(dcgm_dir, L4)))[(L4_GPU, None)]
    assert l4["fb_total_bytes"] == (0 + 22563 + 470) * MIB  # FB_USED 0, FB_FREE 22563, FB_RESERVED 470
    assert l4["energy_j"] == pytest.approx(4742.776)  # a `# TYPE ... counter` family
    assert (l4["sm_active"], l4["util_pct"], l4["sm_clock_mhz"]) == (0.0, 0.0, 210)

    t4 = by_series(parse(read(dcgm_dir, T4)))
    assert t4[(T4_GPU_A, None)]["fb_total_bytes"] == 15109 * MIB  # FB_FREE 15109 + FB_USED 0
    assert t4[(T4_GPU_A, None)]["energy_j"] == pytest.approx(128996.013)
    assert t4[(T4_GPU_B, None)]["fb_total_bytes"] == 15109 * MIB  # only FB_TOTAL (and the copied FB_RESERVED)
    assert t4[(T4_GPU_B, None)]["fb_used_bytes"] is None
    assert all(v is None for k, v in t4[("GPU-abc", None)].items() if k in ("util_pct", "power_w", "fb_used_bytes"))

    h100 = by_series(parse(read(dcgm_dir, H100)))
    assert [h100[(uuid, None)]["temp_c"] for uuid in H100_GPUS] == [30, 29, 26, 29, 28, 26, 28, 26]
    assert h100[(H100_GPUS[0], None)]["power_w"] == pytest.approx(113.611)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_appending_a_capture_twice_writes_nothing_the_second_time(dcgm_dir: Path, name: str, tmp_path: Path) -> None:
    rows = parse(read(dcgm_dir, name))
    lake = Lake(tmp_path / "wh", create=True)
    first = [append(lake, GPU_SAMPLES, rows.samples), append(lake, GPU_ALLOCATIONS, rows.allocations)]
    again = [append(lake, GPU_SAMPLES, rows.samples), append(lake, GPU_ALLOCATIONS, rows.allocations)]
    assert [r.rows_written for r in first] == [EXPECTED[name].sample_rows, len(EXPECTED[name].holders)]
    assert [r.rows_written for r in again] == [0, 0]
    assert lake.scan(GPU_SAMPLES).collect().height == EXPECTED[name].sample_rows


# --- real Prometheus answers -----------------------------------------------------------------------------------

VECTORS = {  # h100x8_prometheus_vector_N.json: the one metric each answer holds, and its gpu_samples column
    2: ("DCGM_FI_DEV_GPU_UTIL", "util_pct"),
    3: ("DCGM_FI_DEV_FB_USED", "fb_used_bytes"),
    4: ("DCGM_FI_DEV_GPU_TEMP", "temp_c"),
    5: ("DCGM_FI_DEV_POWER_USAGE", "power_w"),
}
GPU_NODE_2 = {  # the second node's 8 GPUs, only in the Prometheus answers, gpu="0".."7"
    "GPU-92da0328-2f33-b563-d577-9d2b9f21f280",
    "GPU-184dab49-47ce-eeec-2239-3e03fbd4c002",
    "GPU-dbabb552-a092-0ca9-0580-8d4fe378eb02",
    "GPU-5342927e-e180-84f1-55ba-257f1cbd3ba4",
    "GPU-95085215-739e-e7c6-4011-8dbe004af8c3",
    "GPU-a7b658ad-f23e-cea9-2523-569d521700bf",
    "GPU-1e9a0e94-769a-b1e6-36f7-9296e286ef90",
    "GPU-16b2cd36-9dbe-3ee7-0810-07b330e36e04",
}


def vector_points(path: Path) -> list[DcgmPoint]:
    """A Prometheus /api/v1/query vector answer as points: ``__name__`` + labels, value = [unix time, "value"]."""
    answer = json.loads(path.read_text())
    assert answer["status"] == "success" and answer["data"]["resultType"] == "vector"
    points = []
    for entry in answer["data"]["result"]:
        labels = dict(entry["metric"])
        name = labels.pop("__name__")
        seconds, value = entry["value"]
        ts = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=round(seconds * 1000))
        points.append(DcgmPoint(name, labels, ts, float(value)))
    return points


@pytest.mark.parametrize("n", sorted(VECTORS))
def test_prometheus_answer_matches_the_exporter_capture_of_the_same_node(dcgm_dir: Path, n: int) -> None:
    metric, column = VECTORS[n]
    points = vector_points(dcgm_dir / f"h100x8_prometheus_vector_{n}.json")
    assert {p.name for p in points} == {metric}
    rows = rows_from_points(points, cluster="c1", source="prometheus")
    assert conform(GPU_SAMPLES, rows.samples).num_rows == 16
    via_prometheus = by_series(rows)
    direct = by_series(parse(read(dcgm_dir, H100)))
    assert {uuid for uuid, _ in via_prometheus} == set(H100_GPUS) | GPU_NODE_2
    assert {uuid for uuid, _ in via_prometheus} & {uuid for uuid, _ in direct} == set(H100_GPUS)
    for uuid in H100_GPUS:
        ours, theirs = via_prometheus[(uuid, None)], direct[(uuid, None)]
        identity = ("gpu_index", "gpu_model", "node", "mig_profile")
        assert [ours[c] for c in identity] == [theirs[c] for c in identity]
        if theirs[column] is not None:  # the capture has no FB_USED
            assert ours[column] == theirs[column]
    for uuid in GPU_NODE_2:
        assert via_prometheus[(uuid, None)]["node"] == "gpu-node-2"
    if metric == "DCGM_FI_DEV_FB_USED":
        assert via_prometheus[(H100_GPUS[0], None)]["fb_used_bytes"] == 74166 * MIB


@pytest.mark.parametrize("n", sorted(VECTORS))
def test_prometheus_answer_does_not_count_the_exporter_pod_as_a_holder(dcgm_dir: Path, n: int) -> None:
    """15 of the 16 series carry the scrape target's pod (nvidia-dcgm-exporter-wqqqn / -g2fjs, namespace
    gpu-operator); only GPU 0 of gpu-node-1 carries the vLLM pod that holds it."""
    rows = rows_from_points(
        vector_points(dcgm_dir / f"h100x8_prometheus_vector_{n}.json"), cluster="c1", source="prometheus"
    )
    holders = [(a["gpu_uuid"], a["namespace"], a["pod"], a["container"]) for a in rows.allocations.to_pylist()]
    assert holders == [(H100_GPUS[0], "dynamo-workload", VLLM_POD, "main")]
    assert conform(GPU_ALLOCATIONS, rows.allocations).num_rows == 1


def test_prometheus_answers_at_four_times_give_four_rows_per_gpu(dcgm_dir: Path, tmp_path: Path) -> None:
    points = [p for n in sorted(VECTORS) for p in vector_points(dcgm_dir / f"h100x8_prometheus_vector_{n}.json")]
    rows = rows_from_points(reversed(points), cluster="c1", source="prometheus")
    times = sorted(set(rows.samples.column("ts").to_pylist()))
    assert [t.isoformat() for t in times] == [
        "2026-03-10T03:41:29.184000+00:00",
        "2026-03-10T03:41:29.444000+00:00",
        "2026-03-10T03:41:29.702000+00:00",
        "2026-03-10T03:41:29.943000+00:00",
    ]
    assert rows.samples.num_rows == 16 * 4
    assert rows.allocations.num_rows == 4
    keys = [(r["gpu_uuid"], r["ts"]) for r in samples(rows)]
    assert keys == sorted(keys), "grouped by GPU, in time order"
    lake = Lake(tmp_path / "wh", create=True)
    assert append(lake, GPU_SAMPLES, rows.samples).rows_written == 64
    assert append(lake, GPU_SAMPLES, rows.samples).rows_written == 0


# --- label variants, derived from the real captures ----------------------------------------------------------------


def holders_of(rows: Rows) -> set[tuple[str, str | None, str, str | None, str]]:
    return {
        (a["gpu_uuid"], a["namespace"], a["pod"], a["container"], a["workload"]) for a in rows.allocations.to_pylist()
    }


def test_old_namespace_pod_labels(dcgm_dir: Path) -> None:
    """``--use-old-namespace``: pod_name / pod_namespace / container_name."""
    text = read(dcgm_dir, H100)
    old = text.replace('container="', 'container_name="').replace('namespace="', 'pod_namespace="')
    old = old.replace(',pod="', ',pod_name="')
    assert 'pod_name="' + VLLM_POD in old and ',pod="' not in old
    assert holders_of(parse(old)) == EXPECTED[H100].holders


def test_service_monitor_without_honor_labels_prefers_exported_pod(dcgm_dir: Path) -> None:
    """Every series gets the exporter's own pod as ``pod``; the holder moves to ``exported_pod``."""
    text = read(dcgm_dir, H100)
    text = text.replace('container="', 'exported_container="').replace('namespace="', 'exported_namespace="')
    text = text.replace(',pod="', ',exported_pod="')
    target = 'pod="nvidia-dcgm-exporter-wqqqn",namespace="gpu-operator",container="nvidia-dcgm-exporter",job="dcgm"}'
    text = text.replace("}", "," + target)
    rows = parse(text)
    assert holders_of(rows) == EXPECTED[H100].holders


def test_exporter_pod_is_recognised_by_its_scrape_job(dcgm_dir: Path) -> None:
    """An exporter deployed under another name is still known by the job or service that scraped it."""
    text = read(dcgm_dir, H100).replace('pod_uid=""', 'job="gpu-metrics"')
    target = ',pod="gpu-metrics-x7k2p",namespace="monitoring",container="exporter",job="gpu-metrics"}'
    text = "\n".join(line if "pod=" in line else line.replace("}", target) for line in text.splitlines())
    assert holders_of(parse(text)) == EXPECTED[H100].holders


def test_lowercase_hostname_label(dcgm_dir: Path) -> None:
    """dcgm-exporter's main branch names the node ``hostname``."""
    text = read(dcgm_dir, H100).replace("Hostname=", "hostname=")
    assert {row["node"] for row in samples(parse(text))} == {"gpu-node-1"}


def test_empty_pod_labels_mean_no_holder(dcgm_dir: Path) -> None:
    text = read(dcgm_dir, H100).replace(f'pod="{VLLM_POD}"', 'pod=""').replace('"dynamo-workload"', '""')
    rows = parse(text)
    assert rows.allocations.num_rows == 0 and rows.samples.num_rows == 8


def test_gpu_shared_by_two_pods_gives_one_sample_and_two_allocations(dcgm_dir: Path) -> None:
    """Time-slicing: dcgm-exporter repeats each series of a shared GPU once per pod."""
    text = read(dcgm_dir, H100)
    second = [
        line.replace(VLLM_POD, "vllm-agg-1-vllmdecodeworker-x8k2p") for line in text.splitlines() if VLLM_POD in line
    ]
    rows = parse(text + "\n" + "\n".join(second) + "\n")
    assert rows.samples.num_rows == 8
    pods = [(a["pod"], a["workload"]) for a in rows.allocations.to_pylist()]
    assert pods == [
        (VLLM_POD, "vllm-agg-0-vllmdecodeworker"),
        ("vllm-agg-1-vllmdecodeworker-x8k2p", "vllm-agg-1-vllmdecodeworker"),
    ]
    assert conform(GPU_ALLOCATIONS, rows.allocations).num_rows == 2


def test_pod_on_a_mig_instance_is_allocated_that_instance(dcgm_dir: Path) -> None:
    text = read(dcgm_dir, A100).replace('GPU_I_ID="13",', 'GPU_I_ID="13",pod="llm-7d9f8b6c5d-x2k4q",namespace="ml",')
    rows = parse(text)
    assert [(a["gpu_uuid"], a["mig_instance_id"], a["pod"], a["workload"]) for a in rows.allocations.to_pylist()] == [
        (A100_GPU, 13, "llm-7d9f8b6c5d-x2k4q", "llm")
    ]


def test_sm_active_is_the_fallback_for_gr_engine_active(dcgm_dir: Path) -> None:
    text = read(dcgm_dir, L4).replace("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE")
    text = text.replace('"} 0.000000\n# HELP DCGM_FI_PROF_PIPE_TENSOR', '"} 0.25\n# HELP DCGM_FI_PROF_PIPE_TENSOR', 1)
    assert by_series(parse(text))[(L4_GPU, None)]["sm_active"] == 0.25


# --- tolerance -----------------------------------------------------------------------------------------------------


def test_unknown_metric_families_are_ignored(dcgm_dir: Path) -> None:
    text = read(dcgm_dir, L4)
    labels = re.search(r"DCGM_FI_DEV_GPU_TEMP(\{[^}]*\})", text).group(1)  # type: ignore[union-attr]
    extra = (
        "# HELP DCGM_FI_DEV_MADE_UP_FIELD A field no DCGM release has (in furlongs).\n"
        "# TYPE DCGM_FI_DEV_MADE_UP_FIELD gauge\n"
        f"DCGM_FI_DEV_MADE_UP_FIELD{labels} -42\n"
        "# HELP acme_queue_seconds Not a DCGM family at all.\n"
        "# TYPE acme_queue_seconds histogram\n"
        f'acme_queue_seconds_bucket{{le="1",UUID="{L4_GPU}"}} 3\n'
        'acme_queue_seconds_bucket{le="+Inf"} 4\n'
        "acme_queue_seconds_sum 2.5\n"
        "acme_queue_seconds_count 4\n"
    )
    assert parse(text + extra).samples.equals(parse(text).samples)


def test_values_outside_the_warehouse_ranges_become_null_and_are_logged_once(
    dcgm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = read(dcgm_dir, L4)
    text = re.sub(r"(DCGM_FI_DEV_POWER_USAGE\{.*\}) \S+", r"\1 -5.5", text)
    text = re.sub(r"(DCGM_FI_DEV_GPU_UTIL\{.*\}) \S+", r"\1 150", text)
    text = re.sub(r"(DCGM_FI_DEV_FB_FREE\{.*\}) \S+", r"\1 NaN", text)
    two_gpus = text + "\n".join(
        line.replace(L4_GPU, "GPU-second") for line in text.splitlines() if line.startswith("DCGM")
    )
    with caplog.at_level(logging.WARNING, logger="collector.dcgm"):
        rows = parse(two_gpus + "\n")
    assert rows.samples.num_rows == 2
    for row in samples(rows):
        assert (row["power_w"], row["util_pct"], row["fb_total_bytes"]) == (None, None, None)
        assert (row["temp_c"], row["fb_used_bytes"]) == (31, 0)
    assert conform(GPU_SAMPLES, rows.samples).num_rows == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3
    assert any(m.startswith("dcgm: dropped 2 power_w value(s) outside [0.0, ") and "-5.5" in m for m in warnings)
    assert any(m.startswith("dcgm: dropped 2 util_pct value(s) outside [0.0, 100.0]") for m in warnings)
    assert any(m.startswith("dcgm: dropped 2 fb_total_bytes value(s)") for m in warnings)


def test_sample_timestamps_win_over_the_scrape_time(dcgm_dir: Path) -> None:
    lines = [f"{line} 1773114089184" if line.startswith("DCGM") else line for line in read(dcgm_dir, L4).splitlines()]
    rows = parse("\n".join(lines))
    assert rows.samples.column("ts").to_pylist() == [dt.datetime(2026, 3, 10, 3, 41, 29, 184000, tzinfo=dt.UTC)]


def test_points_at_several_times_give_a_row_per_gpu_per_time() -> None:
    t0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    labels = {"gpu": "0", "UUID": "GPU-x", "Hostname": "n1", "modelName": "NVIDIA L4"}
    points = [DcgmPoint("DCGM_FI_DEV_GPU_UTIL", labels, t0 + dt.timedelta(minutes=m), float(m)) for m in (2, 0, 1)] + [
        DcgmPoint("DCGM_FI_DEV_FB_USED", labels, t0, 10.0)
    ]
    rows = rows_from_points(points, cluster="c1", source="prometheus")
    assert [(r["ts"], r["util_pct"], r["fb_used_bytes"]) for r in samples(rows)] == [
        (t0, 0.0, 10 * MIB),
        (t0 + dt.timedelta(minutes=1), 1.0, None),
        (t0 + dt.timedelta(minutes=2), 2.0, None),
    ]
    assert rows_from_points([], cluster="c1", source="prometheus").samples.num_rows == 0


# --- bodies that are not dcgm-exporter metrics ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            "<!DOCTYPE html>\n<html><body>Grafana</body></html>\n",
            "the answer is not Prometheus metrics; it begins '<!DOCTYPE html> <html><body>G...'",
        ),
        (
            "hello world\n",
            "the answer is not Prometheus metrics: no sample parses, 1 malformed line(s), the first at line 1 "
            "(a hello sample)",
        ),
        (
            "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.5\n",
            "no DCGM_* metric among its 1 samples",
        ),
    ],
)
def test_a_body_that_is_not_dcgm_metrics_is_rejected(body: str, reason: str) -> None:
    with pytest.raises(SourceRejected) as info:
        parse_exposition(body, cluster="c1", scraped_at=SCRAPED_AT, url="http://n1:9400/metrics")
    assert (
        str(info.value) == f"dcgm-exporter at http://n1:9400/metrics refused the request ({reason}): {NOT_METRICS_FIX}"
    )


def test_a_prometheus_api_answer_is_not_an_exposition(dcgm_dir: Path) -> None:
    with pytest.raises(SourceRejected, match=r"it begins '\{ \"status\": \"success\", \"data\"\.\.\.'"):
        parse(read(dcgm_dir, "h100x8_prometheus_vector_2.json"))


def test_an_empty_body_gives_no_rows() -> None:
    assert parse("").count == 0 and parse("\n# nothing yet\n").count == 0


# --- workload names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("trainer-7d9f8b6c5d-x2k4q", "trainer"),  # Deployment: ReplicaSet hash (10) + 5
        ("coredns-5d78c9869d-8xk2m", "coredns"),
        ("vllm-llama-3-8b-5b7c9d8f6-kx9zq", "vllm-llama-3-8b"),  # a 9-character hash, digits in the name
        ("nginx-3249488216-wnmx8", "nginx"),  # pre-1.8 numeric pod-template-hash
        ("web-0", "web"),  # StatefulSet ordinals
        ("postgres-ha-12", "postgres-ha"),
        ("train-llama-2n8xz", "train-llama"),  # Job
        ("nvidia-dcgm-exporter-wqqqn", "nvidia-dcgm-exporter"),  # DaemonSet, from the Prometheus answers
        (VLLM_POD, "vllm-agg-0-vllmdecodeworker"),  # from the H100 capture
        ("hello-28391820-wzq7p", "hello"),  # CronJob: scheduled minute + 5
        ("nightly-eval-29040480-p8k2x", "nightly-eval"),
        ("ray-1111111", "ray-1111111"),  # from the T4/A10G capture: not a generated suffix
        ("jupyter-alice", "jupyter-alice"),  # vowels: a name, not a suffix
        ("model-server", "model-server"),
        ("standalone", "standalone"),
    ],
)
def test_workload_from_pod(pod: str, workload: str) -> None:
    assert workload_from_pod(pod) == workload


# --- reading a live exporter over HTTP -------------------------------------------------------------------------------


class _Exporter(http.server.ThreadingHTTPServer):
    routes: dict[str, tuple[int, str, bytes]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Exporter

    def do_GET(self) -> None:
        status, content_type, body = self.server.routes.get(self.path, (404, "text/plain", b"404 page not found\n"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exporter(dcgm_dir: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving the L4 capture at /metrics, a 500, and an HTML page."""
    server = _Exporter(("127.0.0.1", 0), _Handler)
    server.routes = {
        "/metrics": (200, "text/plain; version=0.0.4", (dcgm_dir / L4).read_bytes()),
        "/broken": (500, "text/plain", b"failed to collect metrics: DCGM is not running\n"),
        "/status": (200, "text/html", b"<!DOCTYPE html>\n<html><head><title>Login</title></head></html>\n"),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_reader_scrapes_metrics_when_the_url_has_no_path(exporter: str, dcgm_dir: Path) -> None:
    clock_at = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)
    reader = DcgmExporterReader(exporter, cluster="c1", clock=lambda: clock_at)
    assert reader.url == f"{exporter}/metrics"
    rows = reader.read()
    assert rows.samples.column("ts").to_pylist() == [clock_at]
    assert rows.samples.equals(parse(read(dcgm_dir, L4), scraped_at=clock_at).samples)


def test_reader_names_an_http_error(exporter: str) -> None:
    with pytest.raises(SourceRejected) as info:
        DcgmExporterReader(f"{exporter}/broken", cluster="c1").read()
    assert str(info.value) == (
        f"dcgm-exporter at {exporter}/broken refused the request (HTTP 500 Internal Server Error): "
        "dcgm-exporter failed to collect: check its logs and that DCGM can see the GPUs"
    )
    with pytest.raises(SourceRejected) as info:
        DcgmExporterReader(f"{exporter}/metricz", cluster="c1").read()
    assert str(info.value) == (
        f"dcgm-exporter at {exporter}/metricz refused the request (HTTP 404 Not Found): "
        "check the path: dcgm-exporter serves its metrics at /metrics"
    )


def test_reader_rejects_an_html_page(exporter: str) -> None:
    with pytest.raises(SourceRejected) as info:
        DcgmExporterReader(f"{exporter}/status", cluster="c1").read()
    assert str(info.value) == (
        f"dcgm-exporter at {exporter}/status refused the request "
        f"(the answer is not Prometheus metrics; it begins '<!DOCTYPE html> <html><head><...'): {NOT_METRICS_FIX}"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reader_names_a_closed_port() -> None:
    port = _free_port()
    with pytest.raises(SourceUnreachable) as info:
        DcgmExporterReader(f"127.0.0.1:{port}", cluster="c1").read()
    assert str(info.value) == (
        f"dcgm-exporter at http://127.0.0.1:{port}/metrics cannot be reached (connection refused): {UNREACHABLE_FIX}"
    )


def test_reader_names_an_unknown_host() -> None:
    with pytest.raises(SourceUnreachable) as info:
        DcgmExporterReader("http://dcgm-exporter.invalid:9400/metrics", cluster="c1", timeout_s=5).read()
    assert str(info.value) == (
        "dcgm-exporter at http://dcgm-exporter.invalid:9400/metrics cannot be reached (host name not found): "
        f"{UNREACHABLE_FIX}"
    )


def test_reader_names_a_timeout() -> None:
    with socket.socket() as listener:  # accepts connections into its backlog, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/metrics"
        with pytest.raises(SourceUnreachable) as info:
            DcgmExporterReader(url, cluster="c1", timeout_s=0.2).read()
    assert str(info.value) == f"dcgm-exporter at {url} cannot be reached (no answer within 0.2 s): {UNREACHABLE_FIX}"


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://n1:9400", "http://n1:9400/metrics"),
        ("http://n1:9400/", "http://n1:9400/metrics"),
        ("n1:9400", "http://n1:9400/metrics"),
        ("https://proxy.example/dcgm/n1/metrics", "https://proxy.example/dcgm/n1/metrics"),
        ("http://n1:9400/custom?x=1", "http://n1:9400/custom?x=1"),
    ],
)
def test_metrics_url(given: str, url: str) -> None:
    assert metrics_url(given) == url


def test_a_thousand_gpu_exposition_parses_whole(dcgm_dir: Path) -> None:
    """125 nodes x 8 GPUs, every L4 family (23 series per GPU), half the GPUs held by a pod: 23,000 samples. (Its
    speed is not asserted here: timings belong to `make bench`.)"""
    template = [line for line in read(dcgm_dir, L4).splitlines() if line]
    lines = []
    for line in template:
        if line.startswith("#"):
            lines.append(line)
            continue
        for i in range(1000):
            pod = f',pod="job-{i // 2}-7d9f8b6c5d-x2k4q",namespace="team-{i % 7}",container="main"' if i % 2 else ""
            lines.append(
                line.replace(L4_GPU, f"GPU-{i:08d}-0000-0000-0000-000000000000")
                .replace('gpu="0"', f'gpu="{i % 8}"')
                .replace("i-030791dc5a37cd257", f"node-{i // 8}")
                .replace("}", pod + "}")
            )
    text = "\n".join(lines) + "\n"
    rows = parse(text)
    assert (rows.samples.num_rows, rows.allocations.num_rows) == (1000, 500)
    assert conform(GPU_SAMPLES, rows.samples).column("fb_total_bytes").to_pylist()[0] == (22563 + 470) * MIB


def test_rows_are_arrow_tables_with_the_warehouse_schemas(dcgm_dir: Path) -> None:
    rows = parse(read(dcgm_dir, H100))
    assert isinstance(rows.samples, pa.Table) and rows.samples.schema.equals(GPU_SAMPLES.schema)
    assert rows.allocations.schema.equals(GPU_ALLOCATIONS.schema)
