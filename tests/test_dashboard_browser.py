"""End to end: `gpuledger dashboard` as a real subprocess on a simulated warehouse, every page opened in headless
Chromium (Playwright, the system's /usr/bin/chromium): the headline numbers of `gpuledger report` visible on it, no
traceback, no empty panel, no "None" cell, every request the page makes going to the dashboard's own host, the links
from a waste to its recommendation and back, and one screenshot per page under tests/artifacts/ (with
``GPULEDGER_DOCS_SCREENSHOTS=1``, under docs/ too: the README's screenshots are made this way)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dashboards import fmt
from gpuledger.cli import main

CHROMIUM = Path(os.environ.get("GPULEDGER_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = {
    "": "Overview",
    "idle_waste": "Idle waste",
    "teams": "Teams",
    "gpus": "GPUs",
    "mig_fit": "MIG fit",
    "spot": "Spot",
    "recommendations": "Recommendations",
    "data_health": "Data health",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def gpuledger() -> list[str]:
    script = Path(sys.executable).parent / "gpuledger"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpuledger.cli"]


@contextlib.contextmanager
def serving(warehouse: Path, cwd: Path) -> Iterator[str]:
    """`gpuledger dashboard` in its own process group until the block ends; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}
    log = (cwd / "dashboard.log").open("wb")
    proc = subprocess.Popen(
        [*gpuledger(), "dashboard", "--warehouse", str(warehouse), "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response,
            ):
                # ours, not another suite's server that took the port first: ours says so once it answers
                if response.status == 200 and proc.poll() is None and b"serving the dashboard" in _read(cwd):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dashboard did not start:\n{(cwd / 'dashboard.log').read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _read(cwd: Path) -> bytes:
    return (cwd / "dashboard.log").read_bytes()


def wait_rendered(page: Any, title: str) -> None:
    """The page's title is there, Streamlit has stopped running the script, no element waits for its code, and
    charts and visible tables are drawn (a table in a collapsed expander is not)."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
    # Streamlit draws a skeleton where an element's lazily loaded code is still on its way (a metric, say)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]')""",
        timeout=30_000,
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
                 .every(c => c.querySelector('canvas, svg'))""",
        timeout=30_000,
    )
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stDataFrame"]')]
                 .every(d => !d.checkVisibility() || d.querySelector('canvas'))""",
        timeout=30_000,
    )
    page.wait_for_timeout(500)


def full_height(page: Any) -> None:
    """Grow the viewport to the content (Streamlit scrolls inside its main block, and a table draws only what is in
    view), so every panel is drawn for the checks and the screenshot."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 80, 6000)})
    page.wait_for_timeout(600)


def screenshot(page: Any, path: Path) -> None:
    full_height(page)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})


def panel_defects(page: Any) -> list[str]:
    """What a reader would call broken in the drawn page: a table with no rows, or a cell reading "None" or nothing
    (in the grid's accessible copy of its cells, which it draws once hovered), a chart drawn at no size, a skeleton
    still shown."""
    for grid in page.locator('[data-testid="stDataFrame"]').all():
        if grid.is_visible():
            grid.hover()
            page.wait_for_timeout(100)
    found: list[str] = page.evaluate(
        """() => {
            const out = [];
            document.querySelectorAll('[data-testid="stDataFrame"]').forEach((d, i) => {
                if (!d.checkVisibility()) return;
                const cells = [...d.querySelectorAll('table td')].map(c => c.innerText.trim());
                if (!cells.length) out.push(`table ${i + 1} has no rows`);
                if (cells.includes('None')) out.push(`table ${i + 1} shows a None cell`);
                if (cells.includes('')) out.push(`table ${i + 1} shows an empty cell`);
            });
            document.querySelectorAll('[data-testid="stVegaLiteChart"]').forEach((c, i) => {
                const box = c.querySelector('canvas, svg')?.getBoundingClientRect();
                if (!box || box.width < 10 || box.height < 10) out.push(`chart ${i + 1} is empty`);
            });
            if (document.querySelector('[data-testid="stSkeleton"]')) out.push('a skeleton is still shown');
            return out;
        }"""
    )
    return found


def own_host(requests: list[str], url: str) -> list[str]:
    """The requests that went anywhere but the dashboard (an air-gapped cluster reaches nothing else)."""
    host = urllib.parse.urlsplit(url).netloc
    return sorted(
        {
            r
            for r in requests
            if urllib.parse.urlsplit(r).scheme in ("http", "https", "ws", "wss")
            and urllib.parse.urlsplit(r).netloc != host
        }
    )


@pytest.mark.slow
def test_every_page_in_a_real_browser(sim_warehouse: Path, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    env = {k: None for k in os.environ if k.startswith("GPULEDGER_")}
    result = CliRunner(env=env).invoke(main, ["report", "--warehouse", str(sim_warehouse), "--format", "json"])
    report = json.loads(result.output)
    headline = {
        "": [fmt.usd(report["fleet"]["cost_usd"]), fmt.usd(report["idle_waste"]["cost_usd"])],
        "idle_waste": [fmt.usd(report["idle_waste"]["cost_usd"]), fmt.hours(report["idle_waste"]["gpu_hours"])],
        "teams": [fmt.usd(report["fleet"]["cost_usd"])],
        "gpus": [fmt.count(report["fleet"]["gpus"]), fmt.pct(report["utilization"]["mean_pct"])],
        "mig_fit": [fmt.usd(report["mig_fit"]["savings_usd_month"])],
        "spot": [fmt.usd(report["spot"]["savings_usd_month"])],
        "recommendations": [],
        "data_health": [fmt.hours(report["states"]["no_data"])],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(sim_warehouse, tmp_path) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda request: requests.append(request.url))
            docs = os.environ.get("GPULEDGER_DOCS_SCREENSHOTS") == "1"
            for path, title in PAGES.items():
                page.goto(f"{url}/{path}")
                wait_rendered(page, title)
                assert page.locator('[data-testid="stException"]').count() == 0, f"{title}: a traceback is shown"
                main_text = page.locator('[data-testid="stMain"]').inner_text()
                for number in headline[path]:
                    assert number in main_text, f"{title}: {number} not visible"
                assert report["window"]["start"][:10] in main_text, f"{title}: window not shown"
                full_height(page)
                assert not panel_defects(page), (title, panel_defects(page))
                name = f"dashboard-{(path or 'overview').replace('_', '-')}.png"
                screenshot(page, ARTIFACTS / name)
                if docs:
                    screenshot(page, DOCS / name)
            # a waste leads to what removes it, and the recommendation back to its evidence
            page.goto(url)
            wait_rendered(page, "Overview")
            top = report["idle_waste"]["by_workload"][0]
            page.get_by_role("link", name="What removes the top waste").click()
            wait_rendered(page, "Recommendations")
            assert f"workload={top['workload']}" in page.url
            focus = page.locator('[data-testid="stMain"]').inner_text()
            assert f"{top['namespace']}/{top['workload']}" in focus, focus[:400]
            page.get_by_role("link", name="Show every recommendation").click()
            wait_rendered(page, "Recommendations")
            page.get_by_role("link", name="See the evidence on its page").click()
            page.wait_for_function("() => !location.pathname.endsWith('/recommendations')", timeout=30_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert not errors, errors
            assert not own_host(requests, url), f"requests outside the dashboard: {own_host(requests, url)}"
            assert any(urllib.parse.urlsplit(r).path.startswith("/media/") for r in requests), "the page icon is served"
        finally:
            browser.close()
