"""GPU model names compared loosely (analysis.gpu_names)."""

from __future__ import annotations

from analysis.gpu_names import gpu_model_key


def test_gpu_model_keys_ignore_case_separators_and_vendor() -> None:
    assert gpu_model_key("NVIDIA H100 80GB HBM3") == gpu_model_key("NVIDIA-H100-80GB-HBM3") == "h100 80gb hbm3"
    assert gpu_model_key("Quadro_RTX_4000") == gpu_model_key("quadro rtx 4000")
