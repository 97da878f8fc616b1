"""Shared pieces of the benchmark suite: results, targets, progress lines, measured subprocesses, sizes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console

from analysis.units import GIB

HEARTBEAT_S = 30.0
"""Without a terminal on stderr, a long step prints one progress line at most this often."""


@dataclass(frozen=True)
class Target:
    """A goal for one number: ``op`` is ">=" or "<=", checked on the value or on value/baseline."""

    op: str
    threshold: float
    on: str = "value"

    def met(self, result: Result) -> bool | None:
        subject = result.ratio if self.on == "ratio" else result.value
        if subject is None:
            return None
        return subject >= self.threshold if self.op == ">=" else subject <= self.threshold

    def describe(self) -> str:
        return f"{'ratio ' if self.on == 'ratio' else ''}{self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Result:
    """One benchmark number; ``baseline``: the same work without the project (None: no baseline)."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, float | str | None]:
        return {"value": self.value, "unit": self.unit, "baseline": self.baseline, "ratio": self.ratio}


class Progress:
    """Progress on stderr: a live status line on a terminal, else plain lines (start, heartbeats, end)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        self.console.print(f"[bench] {text}", markup=False)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Callable[[str], None]]:
        """Announce ``label``; the yielded function shows a detail line (throttled when not on a terminal)."""
        started = time.monotonic()
        last = started
        if self.console.is_terminal:
            with self.console.status(f"{label} ...") as status:

                def update(detail: str) -> None:
                    status.update(f"{label}: {detail} ({time.monotonic() - started:.0f} s)")

                yield update
        else:
            self.note(f"{label} ...")

            def update(detail: str) -> None:
                nonlocal last
                if time.monotonic() - last >= HEARTBEAT_S:
                    last = time.monotonic()
                    self.note(f"  {label}: {detail} ({last - started:.0f} s)")

            yield update
        self.note(f"{label}: done in {time.monotonic() - started:.1f} s")


@dataclass(frozen=True)
class Measured:
    """A finished subprocess: wall time, its peak resident set (from the kernel's rusage) and its output."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def peak_rss_gib(self) -> float:
        return self.peak_rss_bytes / GIB


def gpuledger_command() -> list[str]:
    """The installed ``gpuledger`` script next to this interpreter, else ``python -m gpuledger.cli``."""
    script = Path(sys.executable).parent / "gpuledger"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "gpuledger.cli"]


def simulate_command(warehouse: Path, *, gpus: int, days: int, seed: int, end: dt.datetime) -> list[str]:
    """``gpuledger simulate`` of the benchmark fleet into ``warehouse``."""
    return [
        *gpuledger_command(),
        "simulate",
        "--warehouse",
        str(warehouse),
        "--gpus",
        str(gpus),
        "--days",
        str(days),
        "--seed",
        str(seed),
        "--end",
        end.isoformat(),
    ]


def clean_env() -> dict[str, str]:
    """This environment without ``GPULEDGER_*`` settings, so every run measures the defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GPULEDGER_")}


_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    handle.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs the measured command as its grandchild. Linux carries a process's peak RSS across ``exec``, and a child
forked (or vforked) from this process starts with this process's peak: a benchmark run after an in-process one
would report the harness's memory. A small launcher's child starts from the launcher's small footprint instead."""


def run_measured(
    args: Sequence[str],
    *,
    cwd: Path,
    poll: Callable[[float, int], None] | None = None,
    poll_interval_s: float = 0.5,
) -> Measured:
    """Run ``args`` to completion; ``poll(elapsed_s, rss_bytes)`` is called while it runs.

    Peak RSS is the command's own ``ru_maxrss`` from ``wait4`` in a small launcher (``_LAUNCHER``): exact, not
    sampled, and not mixed with this process's memory or earlier children. Output goes to temporary files: a chatty
    child never blocks.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", suffix=".maxrss") as peak,
    ):
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, peak.name, *args],
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        launcher: psutil.Process | None
        try:
            launcher = psutil.Process(proc.pid)
        except psutil.Error:
            launcher = None
        next_poll = 0.0
        while True:
            pid, status, _usage = os.wait4(proc.pid, 0 if poll is None else os.WNOHANG)
            if pid:
                wall = time.perf_counter() - started
                break
            assert poll is not None
            elapsed = time.perf_counter() - started
            if elapsed >= next_poll:
                next_poll = elapsed + poll_interval_s
                rss = 0
                if launcher is not None:
                    with contextlib.suppress(psutil.Error):
                        rss = sum(child.memory_info().rss for child in launcher.children())
                poll(elapsed, rss)
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        recorded = peak.read().strip()
        return Measured(
            wall_s=wall,
            peak_rss_bytes=int(recorded or 0) * 1024,  # Linux reports KiB
            returncode=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def check_ok(measured: Measured, what: str) -> None:
    if measured.returncode != 0:
        tail = "\n".join(measured.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"{what} exited with {measured.returncode}:\n{tail}")


def tree_bytes(root: Path) -> int:
    """Bytes of every regular file under ``root`` (apparent sizes), each file once: a part and its ``_tmp/`` name
    are hard links to one file until the grace period ends (``warehouse.lake``), and count once on disk too."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                stat = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
                if (stat.st_dev, stat.st_ino) not in seen:
                    seen.add((stat.st_dev, stat.st_ino))
                    total += stat.st_size
    return total


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free
