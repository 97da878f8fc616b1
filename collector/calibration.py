"""Workload shapes measured on a real H200, used to calibrate the simulated fleet.

The capture (``shared/fixtures/nvml-h200/``, driver 580.159.04) ran labelled phases: ``idle_context`` (a CUDA context,
no work), ``saturated`` (bf16 matmuls), ``memory_held_idle`` (60 GiB allocated, no kernels), ``bursty_low`` (one
0.2 ms kernel every 50 ms) and ``released``. Power is expressed as a fraction of the enforced power limit and memory
as bytes so the shapes transfer to other GPU models. ``collector/data/h200_calibration.json`` is the output of
:func:`calibrate` on that capture; a test recomputes it from the fixture.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

CALIBRATION_FILE = Path(__file__).parent / "data" / "h200_calibration.json"


def calibrate(capture_dir: Path) -> dict[str, Any]:
    """Per-phase medians of utilization, power (fraction of the power limit), memory and SM clock."""
    static = json.loads((capture_dir / "nvml_static.json").read_text())["devices"][0]
    limit_w = static["nvmlDeviceGetEnforcedPowerLimit"] / 1000.0
    rows = [json.loads(line) for line in (capture_dir / "nvml_trace.jsonl").read_text().splitlines() if line]
    marks = [json.loads(line) for line in (capture_dir / "phases.jsonl").read_text().splitlines() if line]
    phases: dict[str, Any] = {}
    bounds = [("no_context", rows[0]["ts"], marks[0]["ts"])]
    bounds += [(m["phase"], m["ts"], n["ts"]) for m, n in itertools.pairwise(marks)]
    for name, start, end in bounds:
        inside = [r for r in rows if start <= r["ts"] < end]
        util = sorted(r["util_gpu"] for r in inside)
        phases[name] = {
            "samples": len(inside),
            "util_median_pct": statistics.median(util),
            "util_p10_pct": util[len(util) // 10],
            "power_frac": round(statistics.median(r["power_mw"] for r in inside) / 1000.0 / limit_w, 4),
            "fb_used_bytes": int(statistics.median(r["mem_used"] for r in inside)),
            "sm_clock_mhz": int(statistics.median(r["sm_clock_mhz"] for r in inside)),
            "temp_c": int(statistics.median(r["temp_c"] for r in inside)),
        }
    return {
        "source": "shared/fixtures/nvml-h200 (real NVIDIA H200, driver "
        f"{json.loads((capture_dir / 'nvml_static.json').read_text())['driver']}), via collector.calibration",
        "gpu_model": static["nvmlDeviceGetName"],
        "power_limit_w": limit_w,
        "fb_total_bytes": static["nvmlDeviceGetMemoryInfo"]["total"],
        "max_sm_clock_mhz": static["maxclock_sm"],
        "phases": phases,
    }


def load() -> dict[str, Any]:
    """The shipped calibration."""
    data: dict[str, Any] = json.loads(CALIBRATION_FILE.read_text())
    return data


if __name__ == "__main__":  # regenerate: python -m collector.calibration tests/fixtures/nvml-h200
    import sys

    CALIBRATION_FILE.write_text(json.dumps(calibrate(Path(sys.argv[1])), indent=2) + "\n")
