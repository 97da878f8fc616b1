"""A dcgm-exporter page with malformed lines keeps every valid sample; MIG instances' utilization.

The pages are the real captures in tests/fixtures/dcgm-exporter, copied, with a bad line made by the test: a label
value redacted without its quotes (``Hostname=<redacted>``, as users paste pages into bug reports) or cut off in the
middle (an unterminated quote). The fixtures themselves are never edited.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from streamlit.testing.v1 import AppTest

from collector.agent import Spool
from collector.dcgm import DcgmExporterReader, parse_exposition
from collector.errors import SourceRejected
from dashboards import context
from gpuledger.jobs import ingest
from gpuledger.settings import Settings
from gpuledger.viewing import Viewing
from warehouse.lake import Lake
from warehouse.malformed import count_malformed, malformed_lines
from warehouse.schema import GPU_SAMPLES

SCRAPED_AT = dt.datetime(2026, 3, 10, 3, 41, 29, tzinfo=dt.UTC)
H100 = "h100x8_eks_pod_labels.prom"
A100 = "a100_mig_legacy_labels.prom"
H100_GPU3 = "GPU-a65a773d-52bb-bcc1-a8ee-f78c3faa2e2d"
A100_GPU = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
NOT_METRICS_FIX = "point the URL at dcgm-exporter's metrics endpoint, e.g. http://NODE:9400/metrics"


def capture(fixtures: Path, name: str) -> list[str]:
    return (fixtures / "dcgm-exporter" / name).read_text().split("\n")


def redact(line: str) -> str:
    """The node name redacted the way bug reports do it, quotes and all: no longer a valid label."""
    assert 'Hostname="gpu-node-1"' in line
    return line.replace('Hostname="gpu-node-1"', "Hostname=<redacted>")


def cut(line: str) -> str:
    """The line cut inside a quoted label value (a truncated paste, a torn write)."""
    return line[: line.index('UUID="') + 12]


def parse(text: str) -> object:
    return parse_exposition(text, cluster="c1", scraped_at=SCRAPED_AT, url="http://n1:9400/metrics")


def test_bad_lines_are_skipped_and_every_valid_sample_kept(fixtures: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = capture(fixtures, H100)
    bad_at = [3, 10]  # 0-based: GPU 3's GPU_TEMP, GPU 2's POWER_USAGE
    broken = list(lines)
    broken[bad_at[0]] = redact(lines[bad_at[0]])
    broken[bad_at[1]] = cut(lines[bad_at[1]])
    without = [line for i, line in enumerate(lines) if i not in bad_at]
    caplog.set_level(logging.WARNING)

    rows = parse_exposition("\n".join(broken), cluster="c1", scraped_at=SCRAPED_AT, url="http://n1:9400/metrics")
    expected = parse_exposition("\n".join(without), cluster="c1", scraped_at=SCRAPED_AT)
    assert rows.samples.equals(expected.samples) and rows.allocations.equals(expected.allocations)
    assert rows.samples.num_rows == 8  # all eight GPUs, each with every value its valid lines carry
    gpu3 = next(r for r in rows.samples.to_pylist() if r["gpu_uuid"] == H100_GPU3)
    assert gpu3["temp_c"] is None and gpu3["power_w"] == pytest.approx(67.316)
    assert (rows.malformed_lines, rows.malformed_scrapes) == (2, 1)

    [warning] = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert warning == (
        "dcgm: http://n1:9400/metrics: skipped 2 malformed line(s), first at line 4 (a DCGM_FI_DEV_GPU_TEMP "
        "sample); the page's other samples are kept"
    )
    assert "redacted" not in caplog.text and "gpu-node-1" not in caplog.text and "GPU-a65a" not in caplog.text


def test_a_page_where_nothing_parses_is_one_error(fixtures: Path) -> None:
    lines = [cut(line) for line in capture(fixtures, H100) if line]
    with pytest.raises(SourceRejected) as failed:
        parse("\n".join(lines))
    message = str(failed.value)
    assert message.startswith("dcgm-exporter at http://n1:9400/metrics refused the request (the answer is not ")
    assert message.endswith(NOT_METRICS_FIX) and "\n" not in message


def test_a_clean_page_counts_no_malformed_line(fixtures: Path) -> None:
    rows = parse("\n".join(capture(fixtures, H100)))
    assert (rows.malformed_lines, rows.malformed_scrapes) == (0, 0)  # type: ignore[attr-defined]


def test_the_count_is_kept_in_the_warehouse_and_survives_the_spool(fixtures: Path, tmp_path: Path) -> None:
    lines = capture(fixtures, H100)
    broken = list(lines)
    broken[3] = redact(lines[3])
    rows = parse_exposition("\n".join(broken), cluster="c1", scraped_at=SCRAPED_AT)
    lake = Lake(tmp_path / "wh", create=True)
    assert malformed_lines(lake) is None
    ingest(lake, rows)
    spool = Spool(tmp_path / "spool", 1 << 20)
    spool.prepare()
    spool.put(rows + rows)  # two scrapes' rows waited in the spool (a warehouse that was down)
    [batch] = spool.batches()
    ingest(lake, Spool.read(batch))
    state = json.loads((lake.root / "_state" / "malformed-lines.json").read_text())
    assert (state["lines"], state["scrapes"], state["last_lines"], state["by_source"]) == (
        3,
        3,
        2,
        {"dcgm-exporter": 3},
    )
    counted = malformed_lines(lake)
    assert counted is not None and (counted.lines, counted.scrapes) == (3, 3)


# --- through `gpuledger collect` against a real HTTP exporter -----------------------------------------------------


class _Exporter(http.server.ThreadingHTTPServer):
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Exporter

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve_page() -> Iterator[Callable[[str], str]]:
    servers: list[_Exporter] = []

    def start(body: str) -> str:
        server = _Exporter(("127.0.0.1", 0), _Handler)
        server.body = body.encode()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/metrics"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_collect_once_stores_the_valid_samples_and_counts_the_bad_line(
    cli: Callable[..., Result], fixtures: Path, tmp_path: Path, serve_page: Callable[[str], str]
) -> None:
    lines = capture(fixtures, H100)
    lines[3] = redact(lines[3])
    url = serve_page("\n".join(lines))
    wh = tmp_path / "wh"
    result = cli("collect", "--warehouse", str(wh), "--dcgm-exporter", url, "--once")
    assert result.exit_code == 0, result.output
    assert Lake(wh).scan(GPU_SAMPLES).collect().height == 8  # every GPU of the page
    counted = malformed_lines(Lake(wh))
    assert counted is not None and (counted.lines, counted.scrapes, counted.by_source) == (
        1,
        1,
        {"dcgm-exporter": 1},
    )


def test_collect_once_fails_in_one_line_when_nothing_parses(
    cli: Callable[..., Result], fixtures: Path, tmp_path: Path, serve_page: Callable[[str], str]
) -> None:
    url = serve_page("\n".join(cut(line) for line in capture(fixtures, H100) if line))
    result = cli("collect", "--warehouse", str(tmp_path / "wh"), "--dcgm-exporter", url, "--once")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: dcgm-exporter at {url} refused the request (the answer is not ")
    assert result.stderr.count("\n") == 1


def test_reader_keeps_the_valid_samples_of_a_page(fixtures: Path, serve_page: Callable[[str], str]) -> None:
    lines = capture(fixtures, H100)
    lines[11] = cut(lines[11])
    rows = DcgmExporterReader(serve_page("\n".join(lines)), cluster="c1").read()
    assert rows.samples.num_rows == 8 and rows.malformed_lines == 1


# --- MIG instances: no GPU_UTIL (dcgm-exporter issue 216) -----------------------------------------------------------


def test_mig_instances_use_the_engine_activity_for_utilization(fixtures: Path) -> None:
    """The real A100 MIG capture has no DCGM_FI_DEV_GPU_UTIL at all; GR_ENGINE_ACTIVE is 0.995630 on the GPU and
    0.995687 on instance 13. The H100 capture has GPU_UTIL and no profiling fields: its values are kept as they are."""
    rows = parse("\n".join(capture(fixtures, A100)))
    by_series = {(r["gpu_uuid"], r["mig_instance_id"]): r for r in rows.samples.to_pylist()}  # type: ignore[attr-defined]
    assert by_series[(A100_GPU, 13)]["util_pct"] == pytest.approx(99.5687, abs=1e-4)
    assert by_series[(A100_GPU, None)]["util_pct"] == pytest.approx(99.5630, abs=1e-4)
    h100 = parse("\n".join(capture(fixtures, H100)))
    assert [r["util_pct"] for r in h100.samples.to_pylist()] == [0.0] * 8  # type: ignore[attr-defined]


def test_gpu_util_wins_over_the_engine_activity_when_both_are_reported(fixtures: Path) -> None:
    lines = capture(fixtures, A100)
    instance = next(line for line in lines if "GR_ENGINE_ACTIVE" in line and 'GPU_I_ID="13"' in line)
    util = instance.replace("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL").rsplit(" ", 1)[0] + " 42"
    rows = parse("\n".join([*lines, util]))
    [row] = [r for r in rows.samples.to_pylist() if r["mig_instance_id"] == 13]  # type: ignore[attr-defined]
    assert row["util_pct"] == 42.0


# --- the dashboard's Data health page --------------------------------------------------------------------------------

APP = str(Path(__file__).resolve().parent.parent / "dashboards" / "app.py")


def test_the_data_health_page_shows_the_malformed_count(
    settings: Settings, sim_warehouse: Path, tmp_path: Path
) -> None:
    root = tmp_path / "wh"
    shutil.copytree(sim_warehouse, root)
    context.configure(root, Viewing(settings))
    try:
        at = AppTest.from_file(APP, default_timeout=60)
        at.run()
        at.switch_page("views/data_health.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not any("malformed" in w.value for w in at.warning)
        stamp = dt.datetime(2026, 11, 19, 6, 30, tzinfo=dt.UTC)
        lake = Lake(root)
        with lake.writing():
            count_malformed(lake, source="dcgm-exporter", lines=2, scrapes=1, now=stamp)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        [shown] = [w.value for w in at.warning if "malformed" in w.value]
        assert shown.startswith(
            "2 malformed line(s) skipped in 1 scrape(s) of dcgm-exporter (last on 2026-11-19 06:30 UTC, 2 then)"
        )
    finally:
        context.reset()
