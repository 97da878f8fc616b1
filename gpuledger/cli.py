"""The ``gpuledger`` command: parse arguments, call one job, turn a domain error into one line and exit code 2.

Parsing needs only Click: this module imports nothing heavy at its top, so ``--help`` and usage errors answer at
once. Each command imports its wiring module (``gpuledger.jobs``, ``gpuledger.reporting``, ...) and the warehouse
inside its function, and the settings load once a command's arguments parsed (``SettingsCommand``).
``tests/test_cli_startup.py`` keeps Polars, DuckDB, PyArrow, Pydantic and Streamlit out of those paths.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import click

from analysis.window import Window, parse_time
from gpuledger import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from gpuledger import jobs
    from gpuledger.settings import Settings
    from warehouse.lake import Lake

P = ParamSpec("P")
R = TypeVar("R")
DEMO_MARKER = "demo.json"
DASHBOARD_HOST = "127.0.0.1"
DASHBOARD_PORT = 8501


class Fail(click.ClickException):
    """An expected failure: printed as ``Error: <one line>`` with exit code 2."""

    exit_code = 2


def domain_errors() -> tuple[type[Exception], ...]:
    """The errors a command turns into one line; imported only once something failed (the settings' errors
    import Pydantic)."""
    from alerts.errors import AlertsError
    from analysis.errors import AnalysisError
    from collector.errors import CollectorError
    from dashboards.errors import DashboardError
    from gpuledger.distributed_rollup import RollupEngineError
    from gpuledger.settings_errors import SettingsError
    from warehouse.errors import WarehouseError

    return WarehouseError, AnalysisError, CollectorError, SettingsError, AlertsError, DashboardError, RollupEngineError


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as exc:
            if isinstance(exc, domain_errors()):
                raise Fail(str(exc)) from None
            raise

    return wrapper


class SettingsCommand(click.Command):
    """A command that loads the settings (``--config``, ``GPULEDGER_*``) once its own arguments parsed, before it
    runs: ``--help`` and usage errors never read them, and every command that runs fails on bad settings."""

    def invoke(self, ctx: click.Context) -> Any:
        root = ctx.find_root()
        if root.obj is None:
            root.obj = one_line_errors(_load_settings)(root.params.get("config"))
        return super().invoke(ctx)


class CommandGroup(click.Group):
    """A group whose commands are ``SettingsCommand`` and whose groups are ``CommandGroup`` too."""

    command_class = SettingsCommand
    group_class = type


def _load_settings(config: Path | None) -> Settings:
    from gpuledger.settings import load_settings

    return load_settings(config)


@functools.cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal; silent otherwise (logs and CI stay clean)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = stderr_console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def warehouse_option(required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--warehouse",
        "warehouse",
        type=click.Path(path_type=Path),
        required=False,
        help="Warehouse directory" + ("" if required else " (default: the demo warehouse)") + ".",
    )


def settings_from(ctx: click.Context) -> Settings:
    """The settings ``SettingsCommand`` loaded before this command ran."""
    settings: Settings = ctx.find_root().obj
    return settings


def warehouse_path(ctx: click.Context, given: Path | None) -> Path:
    path = given or settings_from(ctx).warehouse
    if path is None:
        raise Fail("no warehouse given: pass --warehouse DIR (or set `warehouse` in gpuledger.toml)")
    return path


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="gpuledger")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (default: ./gpuledger.toml when present). GPULEDGER_* variables override it.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log progress details (retries, chunks, flushes) on stderr.")
def main(config: Path | None, verbose: bool) -> None:
    """gpuledger: which GPU-hours did useful work, which were wasted, by whom, and what should change."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", force=True
    )


@main.command()
@warehouse_option(required=True)
@click.option("--gpus", type=click.IntRange(min=1), default=64, show_default=True, help="GPUs in the fleet.")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="Days of history.")
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed and end: same fleet, same data.")
@click.option("--end", "end_at", default=None, help="End of the history (T); default: today 00:00 UTC.")
@click.pass_context
@one_line_errors
def simulate(ctx: click.Context, warehouse: Path | None, gpus: int, days: int, seed: int, end_at: str | None) -> None:
    """Simulate a realistic GPU fleet (60 s samples) into the warehouse and roll it up per minute."""
    from gpuledger import jobs
    from warehouse.lake import Lake

    root = warehouse_path(ctx, warehouse)
    if end_at:
        parse_time(end_at, now())  # a bad --end fails before anything is made
    with jobs.removed_on_failure(root):
        _simulate(ctx, Lake(root, create=True), gpus, days, seed, end_at)


def _simulate(ctx: click.Context, lake: Lake, gpus: int, days: int, seed: int, end_at: str | None) -> None:
    from gpuledger import jobs

    end = parse_time(end_at, now()) if end_at else now().replace(hour=0, minute=0, second=0, microsecond=0)
    with progress_bar("simulating days") as sim, progress_bar("rolling up minutes") as roll:
        result = jobs.simulate(
            lake,
            settings_from(ctx),
            gpus=gpus,
            days=days,
            seed=seed,
            end=end,
            progress=sim,
            rollup_progress=roll,
        )
    click.echo(
        f"simulated {result.gpus} GPUs x {result.days} days into {lake.root}: "
        f"{result.samples_written:,} samples, {result.allocations_written:,} allocation rows, "
        f"{result.rollup.computed} rollup partitions computed",
        err=True,
    )
    _store_plan(lake, settings_from(ctx))


@main.command()
@warehouse_option(required=False)
@click.option(
    "--gpus", type=click.IntRange(min=1), default=None, help="GPUs in the demo fleet [default: the demo_gpus setting]."
)
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Days of history [default: the demo_days setting]."
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--no-dashboard", is_flag=True, help="Only print the report.")
@click.option("--port", type=click.IntRange(1, 65535), default=DASHBOARD_PORT, show_default=True)
@click.pass_context
@one_line_errors
def demo(
    ctx: click.Context,
    warehouse: Path | None,
    gpus: int | None,
    days: int | None,
    seed: int,
    no_dashboard: bool,
    port: int,
) -> None:
    """Simulate the default fleet into ./demo-warehouse (made anew each run), print its report, serve the dashboard."""
    from alerts.render import to_markdown
    from gpuledger import reporting
    from warehouse.lake import Lake

    settings = settings_from(ctx)
    root = warehouse or settings.demo_warehouse
    if not no_dashboard:
        from dashboards import server

        server.check_port(DASHBOARD_HOST, port)  # before minutes of simulation, not after
    if root.exists() and not root.is_dir():
        raise Fail(f"{root} is a file, not a folder: pass another --warehouse")
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_MARKER).exists():
            raise Fail(f"{root} exists and was not made by `gpuledger demo`: pass another --warehouse")
        shutil.rmtree(root)
    lake = Lake(root, create=True)
    (root / DEMO_MARKER).write_text(json.dumps({"made_by": "gpuledger demo", "seed": seed}) + "\n")
    _simulate(ctx, lake, gpus or settings.demo_gpus, days or settings.demo_days, seed, None)
    click.echo(to_markdown(reporting.fleet_report(lake, settings, start=None, end=None, now=now())))
    if not no_dashboard:
        _serve_dashboard(root, settings, DASHBOARD_HOST, port)


def _serve_dashboard(root: Path, settings: Settings, host: str, port: int) -> None:
    """Serve until stopped; the "serving" line comes once the server answers (a start that fails is one line)."""
    from dashboards import server
    from gpuledger.viewing import Viewing

    def announce() -> None:
        url = server.url_of(host, port)
        click.echo(f"serving the dashboard of {root} on {url} (read-only; Ctrl+C stops it)", err=True)

    def reading() -> None:
        click.echo(f"reading the default window of {root} ...", err=True)

    server.serve(root, Viewing(settings), host=host, port=port, on_ready=announce, on_reading=reading)


@main.command()
@warehouse_option()
@click.option("--host", default=DASHBOARD_HOST, show_default=True, help="Address to bind (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=DASHBOARD_PORT, show_default=True)
@click.pass_context
@one_line_errors
def dashboard(ctx: click.Context, warehouse: Path | None, host: str, port: int) -> None:
    """Serve the Streamlit dashboard of a warehouse (read-only) until stopped."""
    from gpuledger.parent import end_with_parent

    end_with_parent(os.environ)
    _serve_dashboard(warehouse_path(ctx, warehouse), settings_from(ctx), host, port)


@main.command()
@warehouse_option()
@click.option("--prometheus", "prometheus_url", default=None, metavar="URL", help="Follow this Prometheus (scrape).")
@click.option("--addr", default="127.0.0.1", show_default=True, help="Address of /healthz, /readyz and /metrics.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=DASHBOARD_PORT,
    show_default=True,
    help="The dashboard's port, on 127.0.0.1 only (put an authenticating proxy in front).",
)
@click.option("--no-dashboard", is_flag=True, help="Serve no dashboard.")
@click.option("--no-schedule", is_flag=True, help="Run no alert or report schedule, even with channels configured.")
@click.option("--start", "start_at", default="-1h", show_default=True, help="Follow from here when no scrape ran yet.")
@click.option("--step", type=click.IntRange(min=1), default=60, show_default=True, help="Seconds between points.")
@click.pass_context
@one_line_errors
def server(
    ctx: click.Context,
    warehouse: Path | None,
    prometheus_url: str | None,
    addr: str,
    port: int,
    dashboard_port: int,
    no_dashboard: bool,
    no_schedule: bool,
    start_at: str,
    step: int,
) -> None:
    """Run the follow scrape, the rollup, the scheduler and the dashboard over one warehouse, with /healthz,
    /readyz and the cost metrics on /metrics, until SIGTERM."""
    from gpuledger import serving

    options = serving.ServerOptions(
        warehouse=warehouse_path(ctx, warehouse),
        prometheus=prometheus_url,
        addr=addr,
        port=port,
        dashboard_port=None if no_dashboard else dashboard_port,
        schedule=not no_schedule,
        follow_start=parse_time(start_at, now()),
        step_s=step,
        config=ctx.find_root().params.get("config"),
    )
    for name in ("gpuledger", "alerts"):
        daemon_log = logging.getLogger(name)
        if daemon_log.getEffectiveLevel() > logging.INFO:
            daemon_log.setLevel(logging.INFO)  # a daemon says what it does
    running = serving.Server(options, settings_from(ctx))
    try:
        running.open()
    except serving.ServingError as exc:
        raise Fail(str(exc)) from None

    def announce(host: str, bound: int) -> None:
        click.echo(f"serving /healthz, /readyz and /metrics on http://{host}:{bound} for {options.warehouse}", err=True)

    running.run(on_serving=announce)


@main.command()
@warehouse_option()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.pass_context
@one_line_errors
def query(ctx: click.Context, warehouse: Path | None, sql: str, fmt: str) -> None:
    """Run read-only SQL (SELECT, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE) against the warehouse tables (DuckDB views:
    gpu_samples, gpu_allocations, nodes, prices, gpu_minutes); no file, network or extension access."""
    import polars as pl
    from rich.console import Console
    from rich.table import Table as RichTable

    from warehouse.lake import Lake
    from warehouse.views import run_query

    frame = pl.from_arrow(run_query(Lake(warehouse_path(ctx, warehouse)), sql))
    assert isinstance(frame, pl.DataFrame)
    if fmt == "csv":
        click.echo(frame.write_csv(), nl=False)
    elif fmt == "json":
        click.echo(json.dumps(frame.to_dicts(), default=str, indent=2))
    else:
        table = RichTable(*frame.columns)
        for row in frame.iter_rows():
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)


@main.command()
@warehouse_option()
@click.option("--start", default=None, help="Window start (T). Default: report_days before --end.")
@click.option("--end", default=None, help="Window end, exclusive (T). Default: just after the newest sample.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True)
@click.option("--send", is_flag=True, help="Also send it now to the configured Slack and email channels.")
@click.option("--team", default=None, help="One team's report (a team of the `teams` setting) instead of the fleet's.")
@click.pass_context
@one_line_errors
def report(
    ctx: click.Context,
    warehouse: Path | None,
    start: str | None,
    end: str | None,
    fmt: str,
    send: bool,
    team: str | None,
) -> None:
    """Fleet report: GPUs, GPU-hours, GPU-hours per state, utilization, top namespaces and idle workloads."""
    if send and team is not None:
        raise click.UsageError("--team and --send together: --send sends every team its own report; drop --team")
    from alerts.render import to_html, to_json, to_markdown
    from gpuledger import reporting
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    if send:
        from gpuledger import report_sending

        outcome = report_sending.send_report(lake, settings_from(ctx), start=start, end=end, now=now)
        result = outcome.report
    else:
        result = reporting.fleet_report(lake, settings_from(ctx), start=start, end=end, now=now(), team=team)
    rendered = {"json": to_json, "md": to_markdown, "html": to_html}[fmt](result)
    click.echo(rendered, nl=fmt == "json")
    if send:
        if outcome.delivered:
            click.echo(f"report {outcome.key} delivered to {', '.join(outcome.delivered)}", err=True)
        if outcome.queued:
            why = "; ".join(f"{name}: {error}" for name, error in outcome.queued.items())
            raise Fail(
                f"report not delivered to {', '.join(outcome.queued)} ({why}); it stays queued in {outcome.outbox} "
                "and is retried by `gpuledger schedule` or the next `gpuledger report --send`"
            )


@main.command()
@click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file with [alerts], [reports], [slack], [email] (default: the one `gpuledger` loaded).",
)
@warehouse_option()
@click.pass_context
@one_line_errors
def schedule(ctx: click.Context, config: Path | None, warehouse: Path | None) -> None:
    """Run the alert rules and the daily and weekly reports on their cron schedules until SIGTERM."""
    from gpuledger import scheduling
    from warehouse.lake import Lake

    settings = _load_settings(config) if config is not None else settings_from(ctx)
    root = warehouse or settings.warehouse
    if root is None:
        raise Fail("no warehouse given: pass --warehouse DIR (or set `warehouse` in the config file)")
    gpuledger_log = logging.getLogger("gpuledger")
    if gpuledger_log.getEffectiveLevel() > logging.INFO:
        gpuledger_log.setLevel(logging.INFO)  # a daemon says what it does
    scheduling.run_scheduler(Lake(root), settings)


@main.command()
@warehouse_option()
@click.option(
    "--out", "out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder for the files."
)
@click.option("--start", default=None, help="Window start (T). Default: report_days before --end.")
@click.option("--end", default=None, help="Window end, exclusive (T). Default: just after the newest sample.")
@click.pass_context
@one_line_errors
def recommend(ctx: click.Context, warehouse: Path | None, out: Path, start: str | None, end: str | None) -> None:
    """Export one plan per cluster as ready-to-apply config: --out/<cluster>/ holds a YAML per kind, README.md and
    index.json; --out/README.md and index.json list the clusters."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from gpuledger import jobs, recommending
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    if out.exists() and not out.is_dir():
        raise Fail(f"--out {out} is a file: pass a folder")
    result = recommending.recommendations(lake, settings_from(ctx), start=start, end=end, now=now())
    plan = recommending.plan(result)
    try:
        with jobs.removed_on_failure(out):
            recommending.export(plan, out)
    except OSError as exc:
        raise Fail(
            f"cannot write the recommendations to --out {out} ({exc.strerror or exc}): pass a folder you can write"
        ) from None
    table = RichTable(
        "rank", "cluster", "kind", "target", "banked/month", "alone/month", "confidence", "expected", "pods", "drain"
    )
    for cp in plan.clusters:
        for a in cp.applied:
            r, t = a.rec, a.rec.target
            where = "/".join(str(v) for v in (t.get("namespace"), t.get("workload")) if v) or str(
                t.get("node_group") or "-"
            )
            table.add_row(
                str(a.rank),
                cp.cluster,
                r.kind,
                where,
                f"${a.savings_usd_month:,.2f}",
                f"${r.savings_usd_month:,.2f}",
                f"{r.confidence:.2f}",
                f"${a.expected_savings_usd_month:,.2f}",
                str(r.disruption.get("pods_restarted", 0)),
                "yes" if r.disruption.get("node_drain") else "no",
            )
    Console(width=150).print(table)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    changes = sum(len(cp.applied) for cp in plan.clusters)
    alternatives = sum(len(cp.alternatives) for cp in plan.clusters)
    click.echo(
        f"plan: ${plan.savings_usd_month:,.2f} per month (the node-hours it removes x their price) from {changes} "
        "changes applied together in "
        f"{len(plan.clusters)} cluster(s) ({alternatives} alternatives and per-kind figures if applied alone in "
        f"README.md); wrote {', '.join(cp.folder + '/' for cp in plan.clusters)}, README.md, index.json to {out}"
    )


@main.command()
@warehouse_option()
@click.option(
    "--source", type=click.Choice(["nvml"]), default=None, help="Read this node's GPUs through NVML [default]."
)
@click.option("--dcgm-exporter", "dcgm_url", default=None, metavar="URL", help="Read a dcgm-exporter /metrics URL.")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=10.0, show_default=True, help="Seconds per sample."
)
@click.option("--once", is_flag=True, help="Take one sample, store it, exit.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Serve live values on /metrics.")
@click.option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    help="Address for --metrics-port (loopback; 0.0.0.0 or the pod IP to let Prometheus in).",
)
@click.option("--node", default=None, help="Node name [default: $NODE_NAME, else the host name].")
@click.option(
    "--no-warehouse",
    "no_warehouse",
    is_flag=True,
    help="Store nothing: only serve /metrics (needs --metrics-port) for Prometheus to scrape.",
)
@click.pass_context
@one_line_errors
def collect(
    ctx: click.Context,
    warehouse: Path | None,
    no_warehouse: bool,
    source: str | None,
    dcgm_url: str | None,
    interval: float,
    once: bool,
    duration: float | None,
    metrics_port: int | None,
    metrics_addr: str,
    node: str | None,
) -> None:
    """Sample GPUs (NVML on this node, or a dcgm-exporter) into the warehouse until stopped (SIGTERM flushes)."""
    from gpuledger import jobs, sources

    if source and dcgm_url:
        raise Fail("--source nvml and --dcgm-exporter URL are alternatives: pass one")
    if once and duration is not None:
        raise Fail("--once and --duration are alternatives: pass one")
    settings = settings_from(ctx)
    if no_warehouse:
        if warehouse is not None:
            raise Fail("--warehouse and --no-warehouse are alternatives: pass one")
        if metrics_port is None or once:
            raise Fail("--no-warehouse only serves /metrics: pass --metrics-port PORT (and not --once)")
    root = None if no_warehouse else warehouse_path(ctx, warehouse)
    node_name = node or os.environ.get("NODE_NAME") or socket.gethostname()
    read = sources.open_reader(settings, node=node_name, dcgm_url=dcgm_url)
    if root is None:
        assert metrics_port is not None
        taken = jobs.run_exporter(
            read,
            interval_s=interval,
            metrics_port=metrics_port,
            metrics_addr=metrics_addr,
            duration_s=duration,
            on_serving=lambda addr, port: click.echo(f"serving /metrics on http://{addr}:{port}/metrics", err=True),
        )
        click.echo(f"collected {taken} samples, served on /metrics, stored nothing (--no-warehouse)", err=True)
        return
    stats = jobs.run_agent(
        root,
        read,
        settings,
        interval_s=interval,
        duration_s=duration,
        once=once,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        on_serving=lambda addr, port: click.echo(f"serving /metrics on http://{addr}:{port}/metrics", err=True),
    )
    click.echo(
        f"collected {stats.samples_taken} samples into {root}: {stats.rows_stored:,} rows stored, "
        f"{stats.spooled_batches} batches spooled, {stats.replayed_batches} replayed, {stats.read_errors} read errors",
        err=True,
    )


@main.command()
@click.option("--prometheus", "prometheus_url", required=True, metavar="URL", help="Prometheus base URL.")
@warehouse_option()
@click.option(
    "--start", "start_at", default=None, help="Window start (T, e.g. -7d or 2026-11-01); with --follow default -1h."
)
@click.option("--end", "end_at", default=None, help="Window end, exclusive (T) [default: now].")
@click.option("--step", type=click.IntRange(min=1), default=60, show_default=True, help="Seconds between points.")
@click.option(
    "--follow",
    is_flag=True,
    help="Run until SIGTERM, scraping each step as it closes (from the watermark after a restart).",
)
@click.pass_context
@one_line_errors
def scrape(
    ctx: click.Context,
    prometheus_url: str,
    warehouse: Path | None,
    start_at: str | None,
    end_at: str | None,
    step: int,
    follow: bool,
) -> None:
    """Copy DCGM and kube-state-metrics series from Prometheus; a re-run resumes where the last one stopped."""
    from gpuledger import jobs
    from warehouse.lake import Lake

    at = now()
    root = warehouse_path(ctx, warehouse)
    if follow:
        if end_at is not None:
            raise Fail("--follow runs until stopped: drop --end")
        follow_prometheus(ctx, root, prometheus_url, parse_time(start_at or "-1h", at), step)
        return
    if start_at is None:
        raise Fail("no window start: pass --start T (e.g. -7d), or --follow to keep scraping")
    window = Window(parse_time(start_at, at), parse_time(end_at or "now", at))
    with jobs.removed_on_failure(root), progress_bar("scraping Prometheus") as bar:
        result = jobs.scrape(
            Lake(root, create=True),
            settings_from(ctx),
            url=prometheus_url,
            start=window.start,
            end=window.end,
            step_s=step,
            progress=bar,
        )
    done = result.watermark.isoformat() if result.watermark else "-"
    click.echo(
        f"scraped {result.points:,} points in {result.chunks} chunks ({result.queries} queries): "
        f"{result.samples:,} samples, {result.allocations:,} allocation rows, {result.nodes:,} node rows stored; "
        f"done up to {done}",
        err=True,
    )


def follow_prometheus(ctx: click.Context, root: Path, url: str, start: dt.datetime, step: int) -> None:
    """`scrape --follow`: SIGTERM/SIGINT end it after the write in flight; one line per step with -v."""
    from gpuledger import jobs
    from warehouse.lake import Lake

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    steps = {"ok": 0, "failed": 0}

    def stepped(step_done: jobs.FollowStep) -> None:
        steps["ok" if step_done.ok else "failed"] += 1
        mark = step_done.watermark.isoformat() if step_done.watermark else "-"
        logging.getLogger("gpuledger.follow").info(
            "step: %d points, %d samples stored, done up to %s; next in %.1f s",
            step_done.points,
            step_done.samples,
            mark,
            step_done.next_in_s,
        )

    click.echo(f"following {url} into {root} every {step} s (SIGTERM stops it)", err=True)
    try:
        with jobs.removed_on_failure(root):
            jobs.follow(
                Lake(root, create=True),
                settings_from(ctx),
                url=url,
                start=start,
                step_s=step,
                stop=stop,
                on_step=stepped,
                refresh_rollup=True,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"stopped following: {steps['ok']} steps stored, {steps['failed']} failed", err=True)


@main.command("import-bill")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@warehouse_option()
@click.pass_context
@one_line_errors
def import_bill(ctx: click.Context, files: tuple[Path, ...], warehouse: Path | None) -> None:
    """Import a FOCUS cost export (CSV or Parquet; the parts of one export together): nodes are then priced at
    their effective cost per hour from the bill."""
    from analysis.pricing.bill import period_label
    from gpuledger.billing import import_bill as run_import
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    result = run_import(lake, files)
    periods = ", ".join(period_label(start, end) for start, end in result.periods)
    names = ", ".join(str(f) for f in files)
    click.echo(
        f"imported {result.lines:,} compute usage lines from {names}: {len(result.periods)} billing "
        f"period{'s' if len(result.periods) != 1 else ''} ({periods}), {result.resources:,} resources; "
        f"{result.added:,} new, {result.replaced:,} replaced"
    )


@main.group()
def export() -> None:
    """Export GPU cost allocation for other tools (FOCUS, for a FinOps platform that ingests the cloud bill)."""


@export.command("focus")
@warehouse_option()
@click.option("--start", default=None, help="Window start (T). Default: report_days before --end.")
@click.option("--end", default=None, help="Window end, exclusive (T). Default: just after the newest sample.")
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="The file: NAME.csv or NAME.parquet."
)
@click.pass_context
@one_line_errors
def export_focus(ctx: click.Context, warehouse: Path | None, start: str | None, end: str | None, out: Path) -> None:
    """Write GPU cost allocation as FOCUS 1.2 (CSV or Parquet by --out's extension): one row per node, GPU model,
    workload and day, with its cost, the GPU-time states and the price source; replaces --out atomically."""
    from exposition.focus_file import FocusFileError
    from gpuledger.exporting import export_focus as run_export
    from warehouse.lake import Lake

    def progress(step: str) -> None:
        click.echo(f"export focus: {step}", err=True)

    try:
        result = run_export(
            Lake(warehouse_path(ctx, warehouse)),
            settings_from(ctx),
            out,
            start=start,
            end=end,
            now=now(),
            progress=progress,
        )
    except FocusFileError as exc:
        raise Fail(str(exc)) from None
    click.echo(
        f"wrote {result.rows:,} FOCUS rows to {result.path}: {result.gpu_hours:,.1f} GPU-hours, "
        f"${result.cost_usd:,.2f}, {result.window.start.isoformat()} to {result.window.end.isoformat()}"
    )


@main.group()
def warehouse() -> None:
    """Look after a warehouse: verify parts, quarantine corrupt ones, compact, prune, roll up."""


@warehouse.command()
@warehouse_option()
@click.option("--quarantine", is_flag=True, help="Move unreadable parts to <warehouse>/_quarantine/.")
@click.pass_context
@one_line_errors
def check(ctx: click.Context, warehouse: Path | None, quarantine: bool) -> None:
    """Read every part completely; list the unreadable ones (exit 1 when any remain in place)."""
    from warehouse import maintenance
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    with progress_bar("verifying parts") as bar:
        problems = maintenance.check(lake, quarantine=quarantine, progress=bar)
    for problem in problems:
        action = "quarantined" if quarantine else "corrupt"
        click.echo(f"{action}: {problem.path} ({problem.reason})")
    if not problems:
        click.echo("all parts readable")
    elif not quarantine:
        click.echo(f"run `gpuledger warehouse check --warehouse {lake.root} --quarantine` to move them aside")
        sys.exit(1)


@warehouse.command()
@warehouse_option()
@click.pass_context
@one_line_errors
def migrate(ctx: click.Context, warehouse: Path | None) -> None:
    """Give every table a Delta Lake log listing its parts (Spark, Trino, Athena, DuckDB and Polars read it);
    brings a log in line after an older release wrote, and makes a damaged one anew. Safe to run again."""
    from warehouse import maintenance
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    with progress_bar("writing Delta logs") as bar:
        done = maintenance.migrate(lake, progress=bar)
    for table in done:
        if table.rebuilt:
            click.echo(
                f"{table.table}: the Delta log could not be read; moved it under _quarantine/, made it anew "
                f"with {table.added} parts"
            )
        elif table.created:
            click.echo(f"{table.table}: Delta log made with {table.added} parts")
        elif table.added or table.removed:
            click.echo(f"{table.table}: Delta log brought in line: {table.added} parts added, {table.removed} removed")
        else:
            click.echo(f"{table.table}: Delta log in line")
    if not done:
        click.echo("no tables to migrate: the warehouse is empty")


@warehouse.command()
@warehouse_option()
@click.pass_context
@one_line_errors
def compact(ctx: click.Context, warehouse: Path | None) -> None:
    """Merge each partition's small parts (atomic per partition)."""
    from warehouse import maintenance
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    with progress_bar("compacting partitions") as bar:
        result = maintenance.compact(lake, target_rows=settings_from(ctx).compact_target_rows, progress=bar)
    click.echo(f"compacted {result.partitions} partitions: {result.parts_before} parts -> {result.parts_after}")


@warehouse.command()
@warehouse_option()
@click.option(
    "--keep-days", type=click.IntRange(min=1, max=36_500), default=None, help="Default: the retention_days setting."
)
@click.pass_context
@one_line_errors
def prune(ctx: click.Context, warehouse: Path | None, keep_days: int | None) -> None:
    """Drop date partitions older than the retention period, then refresh the rollup."""
    from gpuledger import jobs
    from warehouse import maintenance
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    settings = settings_from(ctx)
    removed = maintenance.prune(lake, keep_days=keep_days or settings.retention_days, today=now().date())
    jobs.refresh(lake, settings)
    click.echo(f"removed {removed} parts older than {keep_days or settings.retention_days} days")


@warehouse.command()
@warehouse_option()
@click.option(
    "--scheduler",
    envvar="GPULEDGER_DASK_SCHEDULER",
    metavar="ADDRESS",
    default=None,
    help="Run each (date, cluster) as a task on the Dask scheduler at ADDRESS (tcp://host:8786); its workers must "
    "see the warehouse at the same path. Default: roll up in this process.",
)
@click.pass_context
@one_line_errors
def rollup(ctx: click.Context, warehouse: Path | None, scheduler: str | None) -> None:
    """Recompute the gpu_minutes rollup where its inputs or the state settings changed."""
    from gpuledger import jobs
    from warehouse.lake import Lake

    lake = Lake(warehouse_path(ctx, warehouse))
    settings = settings_from(ctx)
    with contextlib.ExitStack() as stack:
        runner = None
        if scheduler:
            from gpuledger.distributed_rollup import dask_runner

            runner = stack.enter_context(dask_runner(scheduler))
        bar = stack.enter_context(progress_bar("rolling up minutes" + (f" on {scheduler}" if scheduler else "")))
        result = jobs.refresh(lake, settings, bar, runner)
    click.echo(f"rollup: {result.computed} partitions computed, {result.fresh} up to date, {result.removed} removed")
    _store_plan(lake, settings)


def _store_plan(lake: Lake, settings: Settings) -> None:
    """Rank the default window's recommendations for the dashboard (``gpuledger.stored_plan``), saying so."""
    from gpuledger import stored_plan

    click.echo("ranking the default window's recommendations for the dashboard ...", err=True)
    stored = stored_plan.store(lake, settings, now())
    if stored is None:
        click.echo(
            "recommendations: none stored, the warehouse changed meanwhile (the dashboard ranks its own)", err=True
        )
        return
    w = stored.window
    click.echo(
        f"recommendations: {stored.items} for {w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC "
        "stored for the dashboard",
        err=True,
    )


if __name__ == "__main__":
    main()
