"""Benchmark 7: time to the first complete render of each dashboard page, and the longest skeleton, in a real browser.

The warehouse is the benchmark fleet (``gpuledger simulate``, by default 1,024 GPUs x 30 days), built once and kept
under ``bench/cache/`` (a marker file says it was completed), since building it takes minutes. Each repeat starts a
fresh ``gpuledger dashboard`` process (so Streamlit's cache is cold), waits until it answers its health check, then
times, in headless Chromium, from navigation to the Overview page until the page is complete: its title drawn,
Streamlit's "running" indicator gone, the chart and the tables drawn. It then opens every other page once on the same
fresh server from the sidebar's list of pages, as a new user does (the reads the Overview shares are cached, each
page's own are not unless the server warmed them), timing each to complete (no skeleton left either), then every
page again by its URL (a deep link: a new document, so Streamlit's front end starts again), and records, from a
script in the page, the longest stretch any placeholder skeleton was on screen (Streamlit's app skeleton before the
first element, or an element's while it loads).

The browser is one that has opened the dashboard before (a returning visitor: Streamlit's ~100 static scripts are in
its cache): each repeat first opens the Overview on another fresh server on the same address, in a new browser
context, and records that too (``dashboard_overview_cold_browser_s``), against the baseline of a one-line Streamlit
app opened the same way in the same run (``streamlit_hello_cold_browser_s``: Streamlit's own front end, loading and
connecting, which no app can go under).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import (
    Progress,
    Result,
    Target,
    check_ok,
    clean_env,
    gpuledger_command,
    run_measured,
    simulate_command,
)

CACHE = Path(__file__).resolve().parent / "cache"
MARKER = ".bench-complete"
CHROMIUM = Path(os.environ.get("GPULEDGER_CHROMIUM", "/usr/bin/chromium"))
TARGET_S = 2.0
SKELETON_TARGET_S = 1.0
PAGES = {
    "idle_waste": "Idle waste",
    "teams": "Teams",
    "gpus": "GPUs",
    "mig_fit": "MIG fit",
    "spot": "Spot",
    "recommendations": "Recommendations",
    "data_health": "Data health",
}
SKELETON = '[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]'
# Runs in every document from its start: the longest stretch a skeleton was shown, sampled every animation frame.
WATCH_SKELETONS = (
    """(() => {
    const w = window; w.__skeleton = {longest: 0, since: null};
    const tick = () => {
        const now = performance.now(), shown = document.querySelector('SKELETON') !== null, s = w.__skeleton;
        if (shown && s.since === null) s.since = now;
        if (s.since !== null) s.longest = Math.max(s.longest, now - s.since);
        if (!shown) s.since = null;
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
})();"""
).replace("SKELETON", SKELETON)
COMPLETE = (
    """() => !document.querySelector('[data-testid="stStatusWidget"]')
         && !document.querySelector('SKELETON')
         && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(c => c.querySelector('canvas, svg'))
         && [...document.querySelectorAll('[data-testid="stDataFrame"]')]
                .every(d => !d.checkVisibility() || d.querySelector('canvas'))"""
).replace("SKELETON", SKELETON)
SIMULATOR = [Path(__file__).resolve().parent.parent / "collector" / name for name in ("fleet.py", "simulate.py")]


def cached_warehouse(*, gpus: int, days: int, seed: int, end: dt.datetime, progress: Progress) -> Path:
    """The benchmark fleet's warehouse under ``bench/cache/``, simulated first when it is not there whole."""
    fleet = f"warehouse-{gpus}x{days}-seed{seed}-{end:%Y%m%d}"
    root = CACHE / f"{fleet}-{_simulator_digest()}"
    if (root / MARKER).is_file():
        progress.note(f"dashboard: reusing {root}")
        return root
    for stale in CACHE.glob(f"{fleet}*"):  # the same fleet made by another version of the simulator
        shutil.rmtree(stale, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    with progress.step(f"dashboard: simulating {gpus} GPUs x {days} days into {root} (kept for later runs)"):
        measured = run_measured(simulate_command(root, gpus=gpus, days=days, seed=seed, end=end), cwd=root.parent)
    check_ok(measured, "gpuledger simulate")
    (root / MARKER).write_text(json.dumps({"gpus": gpus, "days": days, "seed": seed, "end": end.isoformat()}) + "\n")
    return root


def _simulator_digest() -> str:
    """A digest of the simulator's sources: a cached fleet made by other code is made again, never reused."""
    digest = hashlib.sha256()
    for source in SIMULATOR:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(warehouse: Path, workdir: Path, port: int) -> Iterator[tuple[str, float]]:
    """A fresh ``gpuledger dashboard`` on ``port``; yields its URL and the ``perf_counter`` time it was started at."""
    command = [*gpuledger_command(), "dashboard", "--warehouse", str(warehouse), "--port", str(port)]
    with _started(command, workdir, port, "dashboard.log") as started:
        yield started


@contextlib.contextmanager
def serving_hello(workdir: Path, port: int) -> Iterator[tuple[str, float]]:
    """A one-line Streamlit app (its title only) under the dashboard's server options: Streamlit's own floor."""
    app = workdir / "hello.py"
    app.write_text('import streamlit as st\n\nst.title("Overview")\n')
    options = [f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in hello_options(port).items()]
    command = [sys.executable, "-m", "streamlit", "run", str(app), *options]
    with _started(command, workdir, port, "hello.log") as started:
        yield started


def hello_options(port: int) -> dict[str, Any]:
    from dashboards.server import flag_options

    return flag_options("127.0.0.1", port)


@contextlib.contextmanager
def _started(command: list[str], workdir: Path, port: int, log_name: str) -> Iterator[tuple[str, float]]:
    spawned = time.perf_counter()
    log = (workdir / log_name).open("wb")
    proc = subprocess.Popen(
        command, cwd=workdir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start: {(workdir / log_name).read_text()}")
            time.sleep(0.1)
        yield url, spawned
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f} s" for v in values)


def hello_s(page: Any, url: str) -> float:
    """Seconds from navigation until the one-line app's title is drawn and it has finished running."""
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name="Overview", exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')""", timeout=60_000, polling=20
    )
    return time.perf_counter() - started


def render_s(page: Any, url: str, started: float | None = None) -> float:
    """Seconds from navigation (or from ``started``) to the complete Overview page."""
    started = time.perf_counter() if started is None else started
    page.goto(url)
    page.get_by_role("heading", name="Overview", exact=True).first.wait_for(timeout=300_000)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && document.querySelectorAll('[data-testid="stMetric"]').length >= 5
                 && document.querySelectorAll('[data-testid="stVegaLiteChart"]').length > 0
                 && [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                        .every(c => c.querySelector('canvas, svg'))
                 && [...document.querySelectorAll('[data-testid="stDataFrame"]')]
                        .every(d => d.querySelector('canvas'))""",
        timeout=300_000,
        polling=20,
    )
    return time.perf_counter() - started


def page_s(page: Any, url: str, name: str, title: str, *, deep_link: bool = False) -> tuple[float, float]:
    """Seconds from opening a page until it is complete, and the longest skeleton (s) shown meanwhile: opened from
    the sidebar's list of pages, as a user moves between them (Streamlit switches the page without reloading the
    document), or, as a ``deep_link``, by loading its URL (a new document: the front end starts again)."""
    if deep_link:
        started = time.perf_counter()
        page.goto(f"{url}/{name}")
    else:
        page.evaluate("() => { window.__skeleton.longest = 0; window.__skeleton.since = null; }")
        started = time.perf_counter()
        page.locator(f'[data-testid="stSidebarNavLink"][href$="/{name}"]').first.click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=300_000)
    page.wait_for_function(COMPLETE, timeout=300_000, polling=20)
    took = time.perf_counter() - started
    longest = float(page.evaluate("() => window.__skeleton.longest")) / 1000.0
    return took, longest


def run(*, warehouse: Path, workdir: Path, progress: Progress, repeats: int = 3) -> list[Result]:
    if not CHROMIUM.is_file():
        progress.note(f"dashboard: skipped, no Chromium at {CHROMIUM} (apt-get install chromium)")
        return []
    from playwright.sync_api import sync_playwright

    # The dashboard never writes: bring the rollup and its daily summaries up to date first, as a deployment's
    # collector or `gpuledger warehouse rollup` keeps them (a no-op when they are current).
    with progress.step("dashboard: gpuledger warehouse rollup (daily summaries current)"):
        measured = run_measured(
            [*gpuledger_command(), "warehouse", "rollup", "--warehouse", str(warehouse)], cwd=workdir
        )
    check_ok(measured, "gpuledger warehouse rollup")
    hellos: list[float] = []
    hello_skeletons: list[float] = []
    colds: list[float] = []
    cold_skeletons: list[float] = []
    firsts: list[float] = []
    from_start: list[float] = []
    warms: list[float] = []
    pages: dict[str, list[float]] = {name: [] for name in PAGES}
    page_skeletons: dict[str, list[float]] = {name: [] for name in ("overview", *PAGES)}
    skeletons: list[float] = []
    deep_links: list[float] = []
    deep_skeletons: list[float] = []
    label = f"dashboard: first render of every page in Chromium, best of {repeats}"
    with progress.step(label) as update, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for i in range(repeats):
                port = _free_port()
                with serving_hello(workdir, port) as (url, _spawned):
                    fresh = browser.new_page(viewport={"width": 1400, "height": 1000})
                    fresh.add_init_script(WATCH_SKELETONS)
                    hellos.append(hello_s(fresh, url))
                    hello_skeletons.append(float(fresh.evaluate("() => window.__skeleton.longest")) / 1000.0)
                    fresh.close()
                with serving(warehouse, workdir, port) as (url, _spawned):  # a browser new to the dashboard
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.add_init_script(WATCH_SKELETONS)
                    colds.append(render_s(page, url))
                    cold_skeletons.append(float(page.evaluate("() => window.__skeleton.longest")) / 1000.0)
                with serving(warehouse, workdir, port) as (url, spawned):  # the same browser, a fresh server
                    navigated = time.perf_counter()
                    firsts.append(render_s(page, url, navigated))
                    from_start.append(firsts[-1] + navigated - spawned)
                    longest = float(page.evaluate("() => window.__skeleton.longest")) / 1000.0
                    page_skeletons["overview"].append(longest)
                    warms.append(render_s(page, url))
                    for name, title in PAGES.items():
                        took, shown = page_s(page, url, name, title)
                        pages[name].append(took)
                        page_skeletons[name].append(shown)
                        longest = max(longest, shown)
                    skeletons.append(longest)
                    deep = [page_s(page, url, name, title, deep_link=True) for name, title in PAGES.items()]
                    deep_links.append(max(took for took, _ in deep))
                    deep_skeletons.append(max(shown for _, shown in deep))
                    page.close()
                update(
                    f"run {i + 1}/{repeats}: Streamlit floor {hellos[-1]:.2f} s, cold browser {colds[-1]:.2f} s, "
                    f"first {firsts[-1]:.2f} s, again {warms[-1]:.2f} s, slowest other page "
                    f"{max(v[-1] for v in pages.values()):.2f} s, longest skeleton {skeletons[-1]:.2f} s"
                )
        finally:
            browser.close()
    progress.note(
        "dashboard: one-line Streamlit app, cold browser "
        + _seconds(hellos)
        + " (skeletons "
        + _seconds(hello_skeletons)
        + "); Overview, cold browser "
        + _seconds(colds)
        + " (skeletons "
        + _seconds(cold_skeletons)
        + ")"
    )
    progress.note(
        "dashboard: first renders "
        + _seconds(firsts)
        + "; from process start "
        + _seconds(from_start)
        + "; reloads "
        + _seconds(warms)
        + "; longest skeletons "
        + _seconds(skeletons)
    )
    progress.note(
        "dashboard: every page again by its URL (a new document each): slowest "
        + _seconds(deep_links)
        + "; longest skeletons "
        + _seconds(deep_skeletons)
    )
    for name, times in pages.items():
        progress.note(f"dashboard: {name} first renders " + _seconds(times))
    for name, times in page_skeletons.items():
        progress.note(f"dashboard: {name} longest skeletons " + _seconds(times))
    slowest = max(pages, key=lambda name: min(pages[name]))
    return [
        Result(
            "streamlit_hello_cold_browser_s",
            min(hellos),
            "s",
            note="a one-line Streamlit app, fresh server, browser context new to it: Streamlit's floor",
        ),
        Result(
            "dashboard_overview_cold_browser_s",
            min(colds),
            "s",
            baseline=min(hellos),
            note="the Overview the same way: fresh server, browser new to it (fetches Streamlit's scripts)",
        ),
        Result(
            "dashboard_overview_first_render_s",
            min(firsts),
            "s",
            target=Target("<=", TARGET_S),
            note="fresh server, navigation as soon as it answers, by a browser that opened the dashboard before; "
            f"default window; best of {repeats}",
        ),
        Result(
            "dashboard_overview_from_start_s",
            min(from_start),
            "s",
            note="the same, counted from starting `gpuledger dashboard`",
        ),
        Result(
            "dashboard_overview_reload_s",
            min(warms),
            "s",
            note="the same page again on the same server (cached reads)",
        ),
        *(
            Result(
                f"dashboard_{name}_first_render_s",
                min(times),
                "s",
                target=Target("<=", TARGET_S),
                note="first visit on the fresh server, from the sidebar after the Overview; best of the runs",
            )
            for name, times in pages.items()
        ),
        Result(
            "dashboard_slowest_page_first_render_s",
            min(pages[slowest]),
            "s",
            target=Target("<=", TARGET_S),
            note=f"the slowest page's first render ({slowest})",
        ),
        Result(
            "dashboard_slowest_deep_link_s",
            min(deep_links),
            "s",
            note="the slowest page loaded again by its URL (a new document: Streamlit's front end starts again)",
        ),
        Result(
            "dashboard_deep_link_longest_skeleton_s",
            min(deep_skeletons),
            "s",
            note="the longest skeleton over those loads (Streamlit's lazily loaded widgets and charts)",
        ),
        Result(
            "dashboard_longest_skeleton_s",
            min(skeletons),
            "s",
            target=Target("<=", SKELETON_TARGET_S),
            note="the longest a skeleton stayed on screen over one visit of every page; best of the runs",
        ),
    ]
