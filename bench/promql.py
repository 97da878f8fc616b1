"""Benchmark 6: idle waste from ``gpuledger report`` against the same numbers from PromQL on a real Prometheus.

Prometheus-based cost tools (OpenCost, Kubecost, Grafana dashboards over dcgm-exporter) get idle GPU time from
PromQL range queries over the exporter's series. This benchmark puts the same simulated fleet (``gpus`` GPUs x
``days`` days at 60 s, seed 42, ending 2026-11-20 00:00 UTC) in both places and times both answers in one run:

- **gpuledger**: ``gpuledger simulate`` writes a warehouse; ``gpuledger report --format json`` over the window is
  timed as a subprocess (interpreter start and imports included). It computes the whole report (states, waste,
  utilization, MIG fit, spot); its ``idle_waste`` block is the number compared.
- **PromQL**: the very same samples, written as OpenMetrics the way dcgm-exporter exposes them
  (``DCGM_FI_DEV_GPU_UTIL``, ``DCGM_FI_PROF_SM_ACTIVE`` where the simulated exporter has profiling metrics,
  ``DCGM_FI_DEV_FB_USED`` in MiB; labels ``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname`` and, while a pod
  holds the GPU, ``pod``/``namespace``/``container``), plus OpenCost's ``node_gpu_hourly_cost`` per node (the GPU-hour
  price ``analysis.pricing.price_nodes`` gives it), are backfilled with ``promtool`` and served by the ``prometheus``
  binary. The timed part is the set of instant queries in :data:`QUERIES` (subqueries over the window), sent at once
  the way a dashboard sends its panels, wall clock from the first request to the last decoded answer.

Prometheus first compacts the backfilled 2 h blocks (its first compaction starts a minute after startup; the
benchmark waits for it, as a server holding a week would have), then each side gets one untimed warm-up run and
takes the best of ``repeats`` runs, interleaved. A series that ends (its pod left, or the collector went
away) gets one ``NaN`` sample a step later: a scraping Prometheus writes a staleness marker there, which backfilled
history cannot hold, and without it the 5-minute lookback would count a departed pod's last sample five more times.

How close the numbers are, and why they are not equal everywhere: the PromQL idle test is gpuledger's state rule
(SM activity x 100 where DCGM has it, else GPU_UTIL, below ``active_threshold_pct``), and ``count_over_time`` over a
``[window:1m]`` subquery counts each 60 s sample once, as gpuledger's one-minute rollup does, so total idle GPU-hours
and dollars agree to rounding. Memory held does not move the total (it only splits gpuledger's idle into
``idle_held`` and ``idle_allocated``; the ``idle_held_hours`` query is that split). What differs: gpuledger keeps a
holder (and a sample) for up to ``max_gap`` (2 intervals) after its last row, so the minute after a pod leaves is the
pod's idle time there and unallocated time in PromQL; and the first minute of a collector outage is covered by the
previous sample there (``no_data`` only after ``max_gap``), while PromQL sees the staleness marker.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import requests

from analysis.pricing import PriceCatalog, price_nodes
from analysis.states import StateRules
from bench.common import Progress, Result, check_ok, gpuledger_command, run_measured, simulate_command
from collector.fleet import plan
from collector.simulate import INTERVAL_S, FleetTelemetry

END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
SEED = 42
BLOCK_S = 2 * 3600
"""promtool cuts blocks of 2 h and re-reads its whole input once per block, so each 2 h of history gets a file."""
BACKFILL_WORKERS = 2
MIB = float(1 << 20)
RULES = StateRules()
"""gpuledger's default state rules: the PromQL side uses the same thresholds."""
DRIVER_VERSION = "580.105.08"
EXPORTER_PORT = 9400
COMPACTION_TIMEOUT_S = 150.0
COMPACTION_STILL_S = 3.0


def _idle(matcher: str = "") -> str:
    """PromQL for the idle GPUs at one instant, with gpuledger's busy signal: DCGM's SM activity where the exporter
    has profiling metrics, else GPU_UTIL, below the active threshold. ``matcher``: extra label matchers."""
    sel = f"{{{matcher}}}" if matcher else ""
    pct = f"{RULES.active_threshold_pct:g}"
    return (
        f"(DCGM_FI_PROF_SM_ACTIVE{sel} * 100 < {pct})"
        f" or (DCGM_FI_DEV_GPU_UTIL{sel} < {pct} unless on(UUID) DCGM_FI_PROF_SM_ACTIVE{sel})"
    )


def queries(days: int) -> dict[str, str]:
    """The PromQL set, evaluated as instant queries at the window's end: idle GPU-hours per GPU (total and per node
    from it), per namespace (pods' label), unallocated (series without a pod), idle with memory held, and idle
    dollars per namespace at each node's OpenCost GPU-hour price."""
    window = f"{days}d"
    held_mib = f"{RULES.held_memory_bytes / MIB:g}"
    price = f'label_replace(avg_over_time(node_gpu_hourly_cost[{window}]), "Hostname", "$1", "node", "(.+)")'
    idle, held, unheld = _idle(), _idle('pod!=""'), _idle('pod=""')
    return {
        "idle_hours_by_gpu": f"sum by (Hostname, UUID) (count_over_time(({idle})[{window}:1m])) / 60",
        "idle_hours_by_namespace": f"sum by (namespace) (count_over_time(({held})[{window}:1m])) / 60",
        "unallocated_hours": f"sum(count_over_time(({unheld})[{window}:1m])) / 60",
        "idle_held_hours": (
            f'sum(count_over_time((({held}) and on(UUID) DCGM_FI_DEV_FB_USED{{pod!=""}} > {held_mib})'
            f"[{window}:1m])) / 60"
        ),
        "idle_cost_by_namespace": (
            f"sum by (namespace) (sum by (namespace, Hostname) (count_over_time(({idle})[{window}:1m])) / 60"
            f" * on(Hostname) group_left() {price})"
        ),
    }


def util_only_query(days: int) -> str:
    """Idle GPU-hours the plainest way (GPU_UTIL for every GPU): not timed, shown to say what SM activity changes."""
    return f"sum(count_over_time((DCGM_FI_DEV_GPU_UTIL < {RULES.active_threshold_pct:g})[{days}d:1m])) / 60"


QUERIES = queries(7)
"""The queries for the default 7-day window (docs and the final report quote these)."""


@dataclass(frozen=True)
class IdleNumbers:
    gpu_hours: float
    cost_usd: float
    unallocated_hours: float
    idle_held_hours: float
    by_namespace: dict[str, float]


# ------------------------------------------------------------------------------------------------ the history


def history(gpus: int, days: int, seed: int, end: dt.datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The simulated samples with their holders (one row per GPU-sample) and the per-node GPU-hour prices per day."""
    telemetry = FleetTelemetry(plan(gpus, days, seed, end))
    catalog = PriceCatalog.build()
    samples: list[pl.DataFrame] = []
    prices: list[pl.DataFrame] = []
    for day in range(days):
        batch = telemetry.day(day)
        rows = pl.from_arrow(batch.samples)
        held = pl.from_arrow(batch.allocations)
        assert isinstance(rows, pl.DataFrame) and isinstance(held, pl.DataFrame)
        samples.append(
            rows.select(
                "ts", "node", "gpu_uuid", "gpu_index", "gpu_model", "util_pct", "sm_active", "fb_used_bytes"
            ).join(
                held.select("ts", "gpu_uuid", "namespace", "pod", "container"),
                on=["gpu_uuid", "ts"],
                how="left",
            )
        )
        nodes = pl.from_arrow(batch.nodes)
        assert isinstance(nodes, pl.DataFrame)
        prices.append(price_nodes(nodes, catalog).select("date", "node", "instance_type", "usd_per_gpu_hour"))
    return pl.concat(samples), pl.concat(prices)


def _with_staleness(frame: pl.DataFrame, end: dt.datetime) -> pl.DataFrame:
    """``frame`` plus one NaN sample a step after each run of a series ends (what a staleness marker does)."""
    key = ["gpu_uuid", "pod"]
    step = dt.timedelta(seconds=INTERVAL_S)
    ordered = frame.sort([*key, "ts"], nulls_last=True)
    same = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(-1)) for c in key)
    gap = (pl.col("ts").shift(-1) - pl.col("ts")) > step * 1.5
    ends = ordered.filter((~same.fill_null(False) | gap.fill_null(True)) & (pl.col("ts") + step < end))
    markers = ends.with_columns(
        (pl.col("ts") + step).alias("ts"),
        pl.lit(float("nan"), pl.Float32).alias("util_pct"),
        pl.when(pl.col("sm_active").is_not_null()).then(pl.lit(float("nan"), pl.Float32)).alias("sm_active"),
        pl.lit(None, pl.Int64).alias("fb_used_bytes"),
    )
    return pl.concat([ordered, markers]).sort([*key, "ts"], nulls_last=True)


def _dcgm_lines(frame: pl.DataFrame) -> pl.DataFrame:
    """Each sample as the labels and values dcgm-exporter would have exposed (honorLabels: the holder's pod)."""
    pod = pl.when(pl.col("pod").is_not_null()).then(
        pl.concat_str(
            pl.lit(',container="'),
            pl.col("container"),
            pl.lit('",namespace="'),
            pl.col("namespace"),
            pl.lit('",pod="'),
            pl.col("pod"),
            pl.lit('"'),
        )
    )
    instance = pl.col("node").str.extract(r"^ip-(\d+-\d+-\d+-\d+)", 1).str.replace_all("-", ".")
    index = pl.col("gpu_index").cast(pl.String)
    labels = pl.concat_str(
        pl.lit('{gpu="'),
        index,
        pl.lit('",UUID="'),
        pl.col("gpu_uuid"),
        pl.lit('",device="nvidia'),
        index,
        pl.lit('",modelName="'),
        pl.col("gpu_model"),
        pl.lit('",Hostname="'),
        pl.col("node"),
        pl.lit(f'",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}",instance="'),
        instance.fill_null(pl.col("node")),
        pl.lit(f':{EXPORTER_PORT}",job="nvidia-dcgm-exporter"'),
        pod.fill_null(pl.lit("")),
        pl.lit("} "),
    )
    return frame.select(
        labels.alias("labels"),
        pl.col("ts").dt.epoch("s").cast(pl.String).alias("t"),
        pl.col("util_pct").cast(pl.String).alias("util"),
        pl.col("sm_active").cast(pl.String).alias("sm"),
        (pl.col("fb_used_bytes") / MIB).fill_null(float("nan")).cast(pl.String).alias("fb"),
    )


def _price_lines(prices: pl.DataFrame, start: dt.datetime, days: int) -> pl.DataFrame:
    """OpenCost's ``node_gpu_hourly_cost`` for every node, one sample a minute over the history."""
    minutes = pl.DataFrame(
        {"ts": pl.datetime_range(start, start + dt.timedelta(days=days), "1m", closed="left", eager=True)}
    ).with_columns(pl.col("ts").dt.date().alias("date"))
    labels = pl.concat_str(
        pl.lit('{node="'),
        pl.col("node"),
        pl.lit('",instance_type="'),
        pl.col("instance_type"),
        pl.lit('",instance="opencost.opencost:9003",job="opencost"} '),
    )
    return (
        minutes.join(prices, on="date")
        .sort("node", "ts")
        .select(
            pl.col("ts"),
            labels.alias("labels"),
            pl.col("ts").dt.epoch("s").cast(pl.String).alias("t"),
            pl.col("usd_per_gpu_hour").cast(pl.String).alias("price"),
        )
    )


def _write_family(out: Any, name: str, lines: pl.DataFrame, value: str) -> None:
    out.write(f"# TYPE {name} gauge\n")
    out.flush()
    lines.filter(pl.col(value).is_not_null()).select(
        pl.concat_str(pl.lit(name), pl.col("labels"), pl.col(value), pl.lit(" "), pl.col("t"))
    ).write_csv(out, include_header=False, quote_style="never")


def write_openmetrics(samples: pl.DataFrame, prices: pl.DataFrame, root: Path, *, days: int, end: dt.datetime) -> int:
    """One OpenMetrics file per 2 h block under ``root`` (labels built a block at a time, so memory stays small);
    returns the number of samples written."""
    block = (pl.col("ts").dt.epoch("s") // BLOCK_S).alias("block")
    dcgm = _with_staleness(samples, end).with_columns(block)
    price = _price_lines(prices, end - dt.timedelta(days=days), days).with_columns(block)
    price_blocks = price.partition_by("block", as_dict=True, include_key=False, maintain_order=True)
    written = 0
    for (number,), rows in dcgm.partition_by("block", as_dict=True, include_key=False, maintain_order=True).items():
        part = _dcgm_lines(rows)
        with (root / f"block-{number}.om").open("w") as out:
            for name, column in (
                ("DCGM_FI_DEV_GPU_UTIL", "util"),
                ("DCGM_FI_PROF_SM_ACTIVE", "sm"),
                ("DCGM_FI_DEV_FB_USED", "fb"),
            ):
                _write_family(out, name, part, column)
                written += part[column].count()
            cost = price_blocks.get((number,))
            if cost is not None:
                _write_family(out, "node_gpu_hourly_cost", cost, "price")
                written += cost.height
            out.write("# EOF\n")
    return written


def backfill(root: Path, tsdb: Path, update: Callable[[str], None]) -> None:
    """promtool on every block file (two at a time), the blocks moved into one TSDB directory."""
    from tests.prometheus_server import create_blocks

    files = sorted(root.glob("block-*.om"))
    tsdb.mkdir(parents=True, exist_ok=True)

    def one(path: Path) -> None:
        out = path.with_suffix(".blocks")
        create_blocks(path, out)
        path.unlink()
        for made in out.iterdir():
            made.rename(tsdb / made.name)
        shutil.rmtree(out, ignore_errors=True)

    with ThreadPoolExecutor(BACKFILL_WORKERS) as pool:
        for done, _ in enumerate(pool.map(one, files), start=1):
            update(f"{done}/{len(files)} block files")


# ------------------------------------------------------------------------------------------------ the two sides


def _ask(url: str, query: str, when: dt.datetime) -> list[dict[str, Any]]:
    response = requests.get(
        f"{url}/api/v1/query", params={"query": query, "time": f"{when.timestamp():.0f}"}, timeout=300
    )
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus answered {body} to {query}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _instant(url: str, query: str, when: dt.datetime) -> float:
    """The sum of an instant query's values."""
    return sum(float(row["value"][1]) for row in _ask(url, query, when))


def promql_idle(url: str, when: dt.datetime, days: int) -> tuple[float, IdleNumbers]:
    """Every query of the set sent at once (as a dashboard's panels are); the wall time and the numbers."""
    sent = queries(days)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(sent)) as pool:
        answers = dict(zip(sent, pool.map(lambda query: _ask(url, query, when), sent.values()), strict=True))
    wall = time.perf_counter() - started

    def total(name: str) -> float:
        return sum(float(row["value"][1]) for row in answers[name])

    def by_namespace(name: str) -> dict[str, float]:
        return {row["metric"].get("namespace", ""): float(row["value"][1]) for row in answers[name]}

    return wall, IdleNumbers(
        gpu_hours=total("idle_hours_by_gpu"),
        cost_usd=total("idle_cost_by_namespace"),
        unallocated_hours=total("unallocated_hours"),
        idle_held_hours=total("idle_held_hours"),
        by_namespace={**by_namespace("idle_hours_by_namespace"), "": total("unallocated_hours")},
    )


def gpuledger_idle(warehouse: Path, workdir: Path, start: dt.datetime, end: dt.datetime) -> tuple[float, IdleNumbers]:
    args = [
        *gpuledger_command(),
        "report",
        "--warehouse",
        str(warehouse),
        "--format",
        "json",
        "--start",
        start.isoformat(),
        "--end",
        end.isoformat(),
    ]
    measured = run_measured(args, cwd=workdir)
    check_ok(measured, "gpuledger report")
    report = json.loads(measured.stdout)
    waste = report["idle_waste"]
    return measured.wall_s, IdleNumbers(
        gpu_hours=float(waste["gpu_hours"]),
        cost_usd=float(waste["cost_usd"]),
        unallocated_hours=float(report["states"]["unallocated"]),
        idle_held_hours=float(report["states"]["idle_held"]),
        by_namespace={row["namespace"] or "": float(row["idle_gpu_hours"]) for row in waste["by_namespace"]},
    )


def simulate_warehouse(warehouse: Path, workdir: Path, *, gpus: int, days: int, seed: int, end: dt.datetime) -> None:
    args = simulate_command(warehouse, gpus=gpus, days=days, seed=seed, end=end)
    check_ok(run_measured(args, cwd=workdir), "gpuledger simulate")


# ------------------------------------------------------------------------------------------------ the benchmark


def wait_for_compaction(url: str, update: Callable[[str], None], timeout_s: float = COMPACTION_TIMEOUT_S) -> str:
    """Wait until Prometheus has compacted the backfilled 2 h blocks (its first compaction runs a minute after
    startup) and its block count has held still for a few seconds; says what it found."""
    started = time.monotonic()
    last: tuple[float, float] | None = None
    still_since = time.monotonic()
    while time.monotonic() - started < timeout_s:
        text = requests.get(f"{url}/metrics", timeout=10).text
        values = {
            name: float(value)
            for name, value in (line.split(" ", 1) for line in text.splitlines() if line and line[0] != "#")
            if name in ("prometheus_tsdb_blocks_loaded", "prometheus_tsdb_compactions_total")
        }
        now = (values.get("prometheus_tsdb_blocks_loaded", 0.0), values.get("prometheus_tsdb_compactions_total", 0.0))
        if now != last:
            last, still_since = now, time.monotonic()
        elif now[1] > 0 and time.monotonic() - still_since >= COMPACTION_STILL_S:
            return f"{now[1]:.0f} compactions, {now[0]:.0f} blocks"
        update(f"{now[0]:.0f} blocks, {now[1]:.0f} compactions")
        time.sleep(1.0)
    return f"not compacted within {timeout_s:.0f} s: {last[0] if last else 0:.0f} blocks of 2 h"


def run(
    *,
    gpus: int = 64,
    days: int = 7,
    workdir: Path,
    progress: Progress,
    repeats: int = 3,
    seed: int = SEED,
    end: dt.datetime = END,
) -> list[Result]:
    from tests.prometheus_server import PROMETHEUS, PROMTOOL, PrometheusServer

    if PROMETHEUS is None or PROMTOOL is None:
        progress.note(
            "promql: skipped, the prometheus and promtool binaries are not installed (apt-get install prometheus)"
        )
        return []
    start = end - dt.timedelta(days=days)
    root = Path(tempfile.mkdtemp(dir=workdir, prefix="promql-"))
    server: PrometheusServer | None = None
    ours: list[float] = []
    theirs: list[float] = []
    try:
        with progress.step(f"promql: {gpus} GPUs x {days} days as OpenMetrics, backfilled with promtool") as update:
            samples, prices = history(gpus, days, seed, end)
            (root / "om").mkdir()
            points = write_openmetrics(samples, prices, root / "om", days=days, end=end)
            del samples
            update(f"{points:,} samples written")
            backfill(root / "om", root / "tsdb", update)
        server = PrometheusServer(root / "tsdb").start(timeout_s=120)
        with progress.step(f"promql: gpuledger simulate --gpus {gpus} --days {days} (same seed and end)"):
            simulate_warehouse(root / "warehouse", root, gpus=gpus, days=days, seed=seed, end=end)
        with progress.step("promql: waiting for Prometheus to compact the backfilled blocks") as update:
            blocks = wait_for_compaction(server.url, update)
        progress.note(f"promql: Prometheus holds {points:,} samples ({blocks})")
        with progress.step(f"promql: gpuledger report vs PromQL, one warm-up each, then best of {repeats}") as update:
            gpuledger_idle(root / "warehouse", root, start, end)
            promql_idle(server.url, end, days)
            for i in range(repeats):
                wall, mine = gpuledger_idle(root / "warehouse", root, start, end)
                ours.append(wall)
                wall, other = promql_idle(server.url, end, days)
                theirs.append(wall)
                update(f"repeat {i + 1}/{repeats}: gpuledger {ours[-1]:.2f} s, PromQL {theirs[-1]:.2f} s")
        util_only = _instant(server.url, util_only_query(days), end)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    progress.note(
        "promql: gpuledger report runs "
        + ", ".join(f"{t:.2f}" for t in ours)
        + " s; PromQL runs "
        + ", ".join(f"{t:.2f}" for t in theirs)
        + " s"
    )
    progress.note(
        f"promql: idle GPU-hours gpuledger {mine.gpu_hours:,.2f} / PromQL {other.gpu_hours:,.2f} "
        f"(GPU_UTIL alone: {util_only:,.2f}); idle cost ${mine.cost_usd:,.2f} / ${other.cost_usd:,.2f}; "
        f"unallocated {mine.unallocated_hours:,.2f} / {other.unallocated_hours:,.2f} h; "
        f"idle with memory held {mine.idle_held_hours:,.2f} / {other.idle_held_hours:,.2f} h"
    )
    for namespace in sorted(set(mine.by_namespace) | set(other.by_namespace)):
        progress.note(
            f"promql:   namespace {namespace or '(unallocated)':<16} "
            f"gpuledger {mine.by_namespace.get(namespace, 0.0):>9,.2f} h, "
            f"PromQL {other.by_namespace.get(namespace, 0.0):>9,.2f} h"
        )
    fleet = f"{gpus} GPUs x {days} days"
    hours_diff = _relative(mine.gpu_hours, other.gpu_hours)
    cost_diff = _relative(mine.cost_usd, other.cost_usd)
    note = (
        f"{fleet}, best of {repeats}: gpuledger report (whole report, fresh process) vs {len(QUERIES)} PromQL "
        f"queries at once; idle GPU-h {mine.gpu_hours:,.1f} vs {other.gpu_hours:,.1f} ({hours_diff:+.3%}), "
        f"idle ${mine.cost_usd:,.0f} vs ${other.cost_usd:,.0f} ({cost_diff:+.3%})"
    )
    return [
        Result("idle_waste_report_wall_s", min(ours), "s", baseline=min(theirs), note=note),
        Result(
            "idle_waste_promql_wall_s",
            min(theirs),
            "s",
            note=f"{fleet}: {len(QUERIES)} instant queries with [{days}d:1m] subqueries, best of {repeats}",
        ),
        Result(
            "idle_waste_gpu_hours_agreement",
            mine.gpu_hours / other.gpu_hours if other.gpu_hours else float("nan"),
            "ratio",
            note=(
                f"idle GPU-hours gpuledger / PromQL ({mine.gpu_hours:,.2f} / {other.gpu_hours:,.2f}); unallocated "
                f"{mine.unallocated_hours:,.2f} / {other.unallocated_hours:,.2f} h (gpuledger keeps a holder for "
                "up to max_gap after its last allocation row)"
            ),
        ),
    ]


def _relative(ours: float, theirs: float) -> float:
    return (ours - theirs) / theirs if theirs else float("nan")
