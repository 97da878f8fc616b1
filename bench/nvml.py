"""Benchmark: CPU time of the NVML sampler per GPU per sample, against the raw NVML calls it makes.

Without a GPU both sides run on the stand-in built from the real H200 capture (``tests/nvml_standin.py``), so the
ratio is the sampler's own overhead (query wrapper, records, the Arrow conversion amortized over a flush) over the
same calls made bare. The baseline replays exactly the calls the sampler made, recorded in a warm-up run. On a GPU
node, ``--nvml real`` runs both sides on the real pynvml instead.

For reference, on a real H200 six raw calls cost 41 us of CPU per sample, nvitop 1,869 us, gpustat 1,625 us and
``nvidia-smi --query-gpu`` 21,505 us (``shared/fixtures/nvml-h200/peer_collectors_cpu_per_sample.json``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Progress, Result, Target
from collector.nvml import NvmlSampler
from collector.rows import combine

TARGET_RATIO = 2.0


class Recorder:
    """Wraps an NVML module and records every call the sampler makes (warm-up only, never timed)."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._nvml, name)
        if not name.startswith("nvml") or not callable(target):
            return target

        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            return target(*args)

        return call


def run(
    *, progress: Progress, nvml_factory: Callable[[Callable[[], dt.datetime]], Any], gpus: int, ticks: int = 2000
) -> list[Result]:
    clock = _Clock()
    with progress.step(f"nvml: sampler vs raw calls, {gpus} GPUs x {ticks} ticks") as update:
        recorder = Recorder(nvml_factory(clock))
        warm = NvmlSampler(cluster="bench", node="n", nvml=recorder, clock=clock, energy_every_s=60.0)
        warm.open()
        recorder.calls.clear()
        warm_batch = []
        for _ in range(ticks):
            warm_batch.append(warm.read())
            clock.advance(0.1)
        combine(warm_batch)  # once per process: pyarrow loads its time zone data on the first UTC column
        recorded = [(getattr(recorder._nvml, name), args) for name, args in recorder.calls]
        update(f"{len(recorded) / ticks / gpus:.1f} NVML calls per GPU per sample")

        clock.reset()
        sampler = NvmlSampler(cluster="bench", node="n", nvml=nvml_factory(clock), clock=clock, energy_every_s=60.0)
        sampler.open()
        start = time.process_time()
        batch = []
        for _ in range(ticks):
            batch.append(sampler.read())
            clock.advance(0.1)
        combine(batch)  # the Arrow conversion the agent does once per flush
        sampler_us = (time.process_time() - start) / (ticks * gpus) * 1e6

        clock.reset()
        nvml_error = nvml_factory(clock).NVMLError
        start = time.process_time()
        for func, args in recorded:
            with contextlib.suppress(nvml_error):  # "not supported" / "no samples since": part of the raw cost too
                func(*args)
        raw_us = (time.process_time() - start) / (ticks * gpus) * 1e6
    progress.note(f"nvml: sampler {sampler_us:.1f} us, raw calls {raw_us:.1f} us of CPU per GPU per sample")
    return [
        Result(
            "nvml_sampler_cpu_us_per_gpu_sample",
            sampler_us,
            "us",
            baseline=raw_us,
            target=Target("<=", TARGET_RATIO, on="ratio"),
            note=f"baseline: the same NVML calls made bare ({len(recorded) / ticks / gpus:.1f} per GPU per sample)",
        )
    ]


def standin_factory(capture_dir: Path, gpus: int) -> Callable[[Callable[[], dt.datetime]], Any]:
    from tests.nvml_standin import CapturedNVML

    return lambda clock: CapturedNVML(capture_dir, clock, count=gpus)


class _Clock:
    START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)

    def __init__(self) -> None:
        self.now = self.START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)

    def reset(self) -> None:
        self.now = self.START
