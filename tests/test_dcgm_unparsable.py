"""A dcgm-exporter page where nothing parses: one line naming the page, the first bad line's number and its metric,
never a label value (prometheus_client's own message quotes the labels it choked on, a redacted one included).

The page is the real H100 capture (tests/fixtures/dcgm-exporter/h100x8_eks_pod_labels.prom) with every sample line
broken by the test the way bug reports break them; the fixture itself is never edited.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from collector.dcgm import parse_exposition
from collector.errors import SourceRejected

SCRAPED_AT = dt.datetime(2026, 3, 10, 3, 41, 29, tzinfo=dt.UTC)
URL = "http://n1:9400/metrics"
FIX = "point the URL at dcgm-exporter's metrics endpoint, e.g. http://NODE:9400/metrics"


def lines(fixtures: Path) -> list[str]:
    return (fixtures / "dcgm-exporter" / "h100x8_eks_pod_labels.prom").read_text().split("\n")


def rejected(text: str) -> str:
    with pytest.raises(SourceRejected) as failed:
        parse_exposition(text, cluster="c1", scraped_at=SCRAPED_AT, url=URL)
    return str(failed.value)


def test_a_page_of_redacted_labels_names_the_line_and_metric_only(fixtures: Path) -> None:
    page = lines(fixtures)
    broken = [line.replace('Hostname="gpu-node-1"', "Hostname=<redacted>") for line in page]
    bad = sum(1 for line in broken if "<redacted>" in line)
    assert bad > 0
    message = rejected("\n".join(broken))
    assert message == (
        f"dcgm-exporter at {URL} refused the request (the answer is not Prometheus metrics: no sample parses, "
        f"{bad} malformed line(s), the first at line 1 (a DCGM_FI_DEV_GPU_TEMP sample)): {FIX}"
    )
    for label_value in ("<redacted>", "GPU-", "gpu-node-1", "nvidia0", "dynamo-workload", "vllm-agg"):
        assert label_value not in message


def test_a_page_cut_inside_label_values_names_a_later_first_line(fixtures: Path) -> None:
    page = [line for line in lines(fixtures) if line]
    broken = [
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        *(line[: line.index('UUID="') + 12] for line in page),
    ]
    message = rejected("\n".join(broken))
    assert "the first at line 2 (a DCGM_FI_DEV_GPU_TEMP sample)" in message
    assert "GPU-" not in message and "gpu=" not in message and "\n" not in message
