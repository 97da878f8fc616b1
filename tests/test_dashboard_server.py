"""`gpuledger dashboard` and `gpuledger demo`: a busy port, a missing warehouse or a folder that is not one is one
line and exit code 2 before anything starts, and "serving" is said only once the server answers. The commands that
would serve if the check were missing run as real processes with a timeout, so such a test fails instead of hanging."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from warehouse.lake import Lake

START_TIMEOUT_S = 60


def gpuledger() -> list[str]:
    script = Path(sys.executable).parent / "gpuledger"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "gpuledger.cli"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*gpuledger(), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=START_TIMEOUT_S
    )


def in_one_line(stderr: str) -> str:
    assert "serving" not in stderr and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    return in_one_line(result.stderr)


def test_a_busy_port_is_one_line_naming_host_port_and_the_flag(cli, lake: Lake) -> None:
    with taken_port() as port:
        result = cli("dashboard", "--warehouse", str(lake.root), "--port", str(port))
    assert (result.exit_code, in_one_line(result.stderr)) == (
        2,
        f"Error: cannot serve the dashboard on 127.0.0.1:{port}: the port is in use (Address already in use); "
        "pass another --port, or stop what listens there",
    )


def test_a_missing_warehouse_is_refused_before_serving(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-warehouse"
    result = run(["dashboard", "--warehouse", str(missing), "--port", str(free_port())], tmp_path)
    assert one_error(result) == (
        f"Error: warehouse {missing} does not exist: create it with `gpuledger simulate --warehouse {missing}` "
        f"or `gpuledger collect --warehouse {missing}`, or pass the right --warehouse"
    )
    assert not missing.exists()


def test_a_folder_that_is_not_a_warehouse_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("not telemetry")
    result = run(["dashboard", "--warehouse", str(home), "--port", str(free_port())], tmp_path)
    assert one_error(result) == (
        f"Error: {home} is not a gpuledger warehouse (it holds files but no .gpuledger-warehouse): pass the "
        "warehouse's directory to --warehouse, or make one with `gpuledger simulate --warehouse DIR` or "
        "`gpuledger collect`"
    )


def test_demo_checks_its_port_before_it_simulates(cli, tmp_path: Path) -> None:
    wh = tmp_path / "demo"
    with taken_port() as port:
        result = cli("demo", "--warehouse", str(wh), "--gpus", "1", "--days", "1", "--port", str(port))
    assert (result.exit_code, in_one_line(result.stderr)) == (
        2,
        f"Error: cannot serve the dashboard on 127.0.0.1:{port}: the port is in use (Address already in use); "
        "pass another --port, or stop what listens there",
    )
    assert result.stdout == ""
    assert not wh.exists()  # nothing simulated, nothing left behind


def test_serving_is_said_once_the_server_answers(lake: Lake, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*gpuledger(), "dashboard", "--warehouse", str(lake.root), "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr = proc.stderr
    assert stderr is not None

    def read() -> None:
        for line in stderr:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(line.startswith("serving") for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
            assert response.status == 200  # at once: no wait between the line and the answer
        assert seen[-1] == (
            f"serving the dashboard of {lake.root} on http://127.0.0.1:{port} (read-only; Ctrl+C stops it)\n"
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_demo_on_a_file_is_one_line(cli, tmp_path: Path) -> None:
    path = tmp_path / "report.txt"
    path.write_text("mine")
    result = cli("demo", "--warehouse", str(path), "--no-dashboard")
    assert (result.exit_code, in_one_line(result.stderr)) == (
        2,
        f"Error: {path} is a file, not a folder: pass another --warehouse",
    )
    assert path.read_text() == "mine"
