"""End to end: `gpuledger dashboard` as a real subprocess on a simulated warehouse, every page opened in headless
Chromium (Playwright, the system's /usr/bin/chromium), the headline numbers of `gpuledger report` visible on it, and
one screenshot per page under tests/artifacts/."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
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
    """The page's title is there, Streamlit has stopped running the script, and charts and visible tables are
    drawn (a table in a collapsed expander is not)."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
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


def screenshot(page: Any, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the viewport grows to the content first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 80, 6000)})
    page.wait_for_timeout(400)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})


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
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for path, title in PAGES.items():
                page.goto(f"{url}/{path}")
                wait_rendered(page, title)
                assert page.locator('[data-testid="stException"]').count() == 0, f"{title}: a traceback is shown"
                main_text = page.locator('[data-testid="stMain"]').inner_text()
                for number in headline[path]:
                    assert number in main_text, f"{title}: {number} not visible"
                assert report["window"]["start"][:10] in main_text, f"{title}: window not shown"
                screenshot(page, ARTIFACTS / f"dashboard-{path or 'overview'}.png")
            assert not errors, errors
        finally:
            browser.close()
