"""GPU model names as telemetry, catalogs and settings spell them, compared loosely."""

from __future__ import annotations

import functools
import re


@functools.cache
def gpu_model_key(name: str) -> str:
    """A GPU model name compared loosely: lower case, runs of spaces, ``-`` and ``_`` as one space, no ``nvidia``.

    ``NVIDIA H100 80GB HBM3`` (NVML) and ``NVIDIA-H100-80GB-HBM3`` (the GPU feature discovery label) are both
    ``h100 80gb hbm3``.
    """
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower()).strip()
    return key.removeprefix("nvidia ").strip()
