"""Run the benchmark suite: ``python -m bench.run [--quick] [--gpus N] [--days N]`` (``make bench``).

Prints a table on stdout, progress on stderr, and writes ``bench/results/latest.json``:
``{"<name>": {"value", "unit", "baseline", "ratio"}, ..., "machine": {...}}``. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.units import GIB
from bench import (
    cli,
    dashboard,
    distributed,
    fleet,
    follow_step,
    ingest,
    machine,
    nvml,
    promql,
    recommend,
    report,
    rollup,
    scale,
    scrape,
)
from bench.common import Progress, Result, free_bytes

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
FULL = {"gpus": 1024, "days": 30}
QUICK = {"gpus": 64, "days": 2}
DEFAULT_END = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
"""A fixed end of history, so every run simulates the very same fleet and samples."""
H200_CAPTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nvml-h200"
"""The real H200 capture the NVML stand-in replays."""
DISTRIBUTED_DAYS = 3
"""Days of the distributed rollup's fleet: enough partitions for two workers, each run recomputing all of them."""
NVML_GPUS = 8
"""GPUs on the simulated node for the NVML benchmark (one p5/p5en node)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small fleet ({QUICK['gpus']} GPUs x {QUICK['days']} days): a smoke run",
    )
    parser.add_argument("--gpus", type=int, default=None, help=f"GPUs in every fleet (default {FULL['gpus']})")
    parser.add_argument("--days", type=int, default=None, help=f"days for simulate/report (default {FULL['days']})")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3, help="repeats for best-of timings (default 3)")
    parser.add_argument(
        "--only",
        choices=(
            "ingest",
            "fleet",
            "nvml",
            "scrape",
            "follow",
            "promql",
            "dashboard",
            "rollup",
            "recommend",
            "cli",
            "distributed",
        ),
        default=None,
        help="ingest: benchmark 1; fleet: simulate, bytes, report; nvml: the NVML sampler's CPU per sample; "
        "scrape: points/s from a real Prometheus; follow: CPU of one follow step (the newest minute of --gpus GPUs); "
        "promql: idle waste, gpuledger report vs PromQL on a real Prometheus; "
        "dashboard: first render of every page and the longest skeleton in Chromium (fleet cached under bench/cache/); "
        "rollup: one rollup partition with shared-GPU splits against the rollup before them (same cached fleet); "
        "recommend: gpuledger recommend over the last 7 days against the same window's report (same cached fleet); "
        "cli: gpuledger --help, usage errors and a report on the demo fleet (cached too), each a fresh process; "
        "distributed: the rollup of --gpus GPUs x 3 days in one process and on 1 and 2 Dask workers",
    )
    parser.add_argument(
        "--scale",
        choices=("all", "fleet", "promql"),
        nargs="?",
        const="all",
        default=None,
        help="run the scale curves instead of the suite: fleet: simulate, rollup and report at "
        + ", ".join(f"{g:,} GPUs x {d} days" for g, d in scale.FLEET_SIZES)
        + "; promql: idle waste against PromQL at "
        + ", ".join(f"{g:,} x {d}" for g, d in scale.PROMQL_SIZES)
        + " (GPUs x days); all (the default): both. Hours on a 2-core machine",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help="with --scale fleet or --scale promql: measure only these sizes, GPUSxDAYS separated by commas "
        "(4096x30), to add a point to a curve measured before",
    )
    parser.add_argument(
        "--tmpdir", type=Path, default=None, help="where the temporary warehouses go (default: $TMPDIR)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results file (default {RESULTS})")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one append to stderr")
    parser.add_argument("--check", action="store_true", help="exit 1 when a number misses its target")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    args.gpus = args.gpus or size["gpus"]
    args.days = args.days or size["days"]
    if args.gpus < 1 or args.days < 1 or args.repeats < 1:
        parser.error("--gpus, --days and --repeats must be at least 1")
    if args.scale and (args.only or args.quick):
        parser.error("--scale runs its own sizes: leave out --only and --quick")
    if args.sizes and args.scale not in ("fleet", "promql"):
        parser.error("--sizes belongs to one curve: pass --scale fleet or --scale promql with it")
    return args


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``4096x30,1024x7`` as ((4096, 30), (1024, 7))."""
    sizes = []
    for piece in text.split(","):
        gpus, _, days = piece.strip().partition("x")
        if not (gpus.isdigit() and days.isdigit() and int(gpus) > 0 and int(days) > 0):
            raise argparse.ArgumentTypeError(f"{piece.strip()!r} is not GPUSxDAYS (such as 4096x30)")
        sizes.append((int(gpus), int(days)))
    return tuple(sizes)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("rows/s", "rows"):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def render(results: list[Result], console: Console) -> None:
    table = Table(title="gpuledger benchmarks")
    table.add_column("benchmark")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("baseline", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target")
    table.add_column("status")
    table.add_column("note")
    for r in results:
        met = r.target.met(r) if r.target else None
        status = "" if met is None else ("[green]met[/]" if met else "[bold red]MISSED[/]")
        table.add_row(
            r.name,
            _fmt(r.value, r.unit),
            r.unit,
            _fmt(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target.describe() if r.target else "",
            status,
            r.note,
        )
    console.print(table)


def check_disk(workdir: Path, gpus: int, days: int, progress: Progress, fleet_too: bool) -> None:
    needed = gpus * fleet.MINUTES_PER_DAY * 100.0  # one day's bare and appended Parquet copies, with room to spare
    if fleet_too:
        needed += fleet.estimated_bytes(gpus, days)
    free = free_bytes(workdir)
    progress.note(f"temp dir {workdir}: {free / GIB:,.1f} GiB free, about {needed / GIB:,.1f} GiB needed")
    if free < needed:
        raise SystemExit(f"not enough space under {workdir}: pass --tmpdir on a larger disk")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress = Progress()
    out = Console(width=None if sys.stdout.isatty() else 160)
    started = time.monotonic()
    machine_block: dict[str, Any] = machine.describe()
    machine_block["run"] = {
        "gpus": args.gpus,
        "days": args.days,
        "ingest_days": 1,
        "seed": args.seed,
        "end": DEFAULT_END.isoformat(),
        "repeats": args.repeats,
        "quick": args.quick,
        "only": args.only,
        "scale": args.scale,
    }
    base = args.tmpdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gpuledger-bench-", dir=base))
    results: list[Result] = []
    try:
        if args.scale is not None:
            results += run_scale(args, workdir, progress)
            return finish(args, results, machine_block, started, out, progress)
        fleet_too = args.only not in ("ingest", "follow", "dashboard", "rollup", "recommend", "cli", "distributed")
        check_disk(workdir, args.gpus, args.days, progress, fleet_too=fleet_too)
        if args.only in (None, "ingest"):
            results += ingest.run(
                gpus=args.gpus,
                seed=args.seed,
                end=DEFAULT_END,
                workdir=workdir,
                progress=progress,
                repeats=args.repeats,
            )
            if args.profile:
                progress.note("profile of one append (cumulative time):")
                text = ingest.profile_append(gpus=args.gpus, seed=args.seed, end=DEFAULT_END, workdir=workdir)
                sys.stderr.write(text)
        if args.only in (None, "nvml"):
            results += nvml.run(
                progress=progress,
                nvml_factory=nvml.standin_factory(H200_CAPTURE, NVML_GPUS),
                gpus=NVML_GPUS,
            )
        if args.only in (None, "scrape"):
            results += scrape.run(
                gpus=min(args.gpus, 64), hours=6, workdir=workdir, progress=progress, repeats=args.repeats
            )
        if args.only in (None, "follow"):
            results += follow_step.run(gpus=args.gpus, workdir=workdir, progress=progress, repeats=args.repeats)
        if args.only in (None, "fleet"):
            simulated = fleet.simulate(
                gpus=args.gpus,
                days=args.days,
                seed=args.seed,
                end=DEFAULT_END,
                workdir=workdir,
                progress=progress,
            )
            results += simulated.results
            results += report.run(
                warehouse=simulated.warehouse, workdir=workdir, progress=progress, repeats=args.repeats
            )
        if args.only in (None, "promql"):
            results += promql.run(
                gpus=min(args.gpus, 64),
                days=min(args.days, 7),
                seed=args.seed,
                end=DEFAULT_END,
                workdir=workdir,
                progress=progress,
                repeats=args.repeats,
            )
        if args.only in (None, "dashboard", "rollup", "recommend"):
            # the fleet just simulated when there is one, else the copy kept under bench/cache/
            served = (
                simulated.warehouse
                if args.only is None
                else dashboard.cached_warehouse(
                    gpus=args.gpus, days=args.days, seed=args.seed, end=DEFAULT_END, progress=progress
                )
            )
            if args.only in (None, "rollup"):
                results += rollup.run(warehouse=served, workdir=workdir, progress=progress, repeats=args.repeats)
            if args.only in (None, "dashboard"):
                results += dashboard.run(warehouse=served, workdir=workdir, progress=progress, repeats=args.repeats)
            if args.only in (None, "recommend"):
                results += recommend.run(
                    warehouse=served,
                    end=DEFAULT_END,
                    days=args.days,
                    workdir=workdir,
                    progress=progress,
                    repeats=args.repeats,
                )
        if args.only in (None, "distributed"):
            results += distributed.run(
                gpus=args.gpus,
                days=min(args.days, DISTRIBUTED_DAYS),
                seed=args.seed,
                end=DEFAULT_END,
                workdir=workdir,
                progress=progress,
                repeats=args.repeats,
            )
        if args.only in (None, "cli"):
            results += cli.run(
                seed=args.seed, end=DEFAULT_END, workdir=workdir, progress=progress, repeats=args.repeats
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return finish(args, results, machine_block, started, out, progress)


def run_scale(args: argparse.Namespace, workdir: Path, progress: Progress) -> list[Result]:
    common = {"seed": args.seed, "end": DEFAULT_END, "workdir": workdir, "progress": progress, "repeats": args.repeats}
    results: list[Result] = []
    if args.scale in ("all", "fleet"):
        results += scale.fleet_curve(**common, sizes=args.sizes or scale.FLEET_SIZES)
    if args.scale in ("all", "promql"):
        results += scale.promql_curve(**common, sizes=args.sizes or scale.PROMQL_SIZES)
    return results


def finish(
    args: argparse.Namespace,
    results: list[Result],
    machine_block: dict[str, Any],
    started: float,
    out: Console,
    progress: Progress,
) -> int:
    """Print the table, write the JSON results, say which targets were missed; the exit status."""
    machine_block["load_average_at_end"] = machine.load_average()
    machine_block["bench_wall_s"] = round(time.monotonic() - started, 1)

    render(results, out)
    document: dict[str, Any] = {r.name: r.to_json() for r in results}
    document["machine"] = machine_block
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    progress.note(f"wrote {args.out} ({machine_block['bench_wall_s']:.0f} s in all)")
    missed = [r.name for r in results if r.target and r.target.met(r) is False]
    if missed:
        progress.note("missed targets: " + ", ".join(missed))
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
