"""The fleet report as a reader sees it: the rendered markdown, the HTML page and the Slack and email bodies of the
simulated fleet (16 GPUs x 3 days, two clusters, H100 with L4 and A10G), read the way a new user reads them.

Each test pins one rough edge found by trying the report as a new user (issue 16): markdown emphasis leaking into
the HTML, right-aligned text, a long price source repeated on every row, GPUs without MIG in the MIG table, a Python
dict in the text, microseconds in the window, no per-cluster or per-team breakdown, and the reconciliation with
OpenCost and Kubecost shown when its inputs exist and explained when they do not.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from alerts.render import to_html, to_markdown
from alerts.report import check_blocks, report_message
from analysis.errors import AnalysisError
from analysis.mig.catalog import load_catalog
from analysis.report import NO_PODS, UnknownTeam
from gpuledger import reporting
from gpuledger.settings import load_settings
from tests.conftest import T0, sample_rows
from warehouse.ingest import append
from warehouse.lake import Lake
from warehouse.schema import GPU_SAMPLES

NOW = dt.datetime(2026, 11, 20, 10, 17, 33, 123456, tzinfo=dt.UTC)
"""Mid-minute, with microseconds: a relative --start from it must still print cleanly."""
TEAMS = {"ml": ["ml-*"], "serving": ["search", "recsys", "vision"]}
NUMERIC = re.compile(r"^(n/a|[+-]?\$?[\d,]+(\.\d+)?%?)$")
MARKER = re.compile(r"\[(\d+)\]")
CLEAN_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(:\d{2})?")


@dataclass(frozen=True)
class Rendered:
    report: dict[str, Any]
    markdown: str
    html: str
    slack: dict[str, Any]
    email: dict[str, str]


@pytest.fixture(scope="module")
def rendered(sim_warehouse: Path) -> Iterator[Rendered]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sim_warehouse.parent)
        mp.setenv("GPULEDGER_TEAMS", '{"ml": ["ml-*"], "serving": ["search", "recsys", "vision"]}')
        settings = load_settings(None)
        assert settings.teams == TEAMS
        report = reporting.fleet_report(Lake(sim_warehouse), settings, start="-1w", end=None, now=NOW, refresh=False)
    message = report_message(report, [], title="gpuledger weekly report")
    yield Rendered(report, to_markdown(report), to_html(report), message.slack, message.email)


# ---------------------------------------------------------------------------------------------- reading the output


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    right: list[bool]
    """Per column: right aligned."""
    rows: list[list[str]]
    after: list[str]
    """The lines after the table, up to the next heading."""


def markdown_tables(text: str) -> list[Table]:
    lines = text.splitlines()
    out: list[Table] = []
    title = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            title = line[3:]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = _cells(line)
            right = [c.endswith(":") for c in _cells(lines[i + 1])]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            after = []
            while i < len(lines) and not lines[i].startswith("#"):
                after.append(lines[i])
                i += 1
            out.append(Table(title, header, right, rows, after))
            continue
        i += 1
    return out


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


class _HtmlTables(HTMLParser):
    """Each table's cells as (class, text), and every text outside tags."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.texts: list[str] = []
        self._cell: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = (dict(attrs).get("class") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._cell is not None:
            self._cell[1].append(data)


def html_tables(page: str) -> _HtmlTables:
    parser = _HtmlTables()
    parser.feed(page)
    return parser


def slack_text(slack: dict[str, Any]) -> str:
    parts = [slack.get("text", "")]
    for block in slack["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts += [f["text"] for f in block.get("fields", [])]
        parts += [e.get("text", "") for e in block.get("elements", [])]
    return "\n".join(parts)


def sources(r: Rendered) -> list[str]:
    return [str(s["price_source"]) for s in r.report["fleet"]["price_sources"]]


# ---------------------------------------------------------------------------------------------------------- tests


def test_the_html_shows_no_markdown_emphasis(rendered: Rendered) -> None:
    for page in (rendered.html, rendered.email["html"]):
        parsed = html_tables(page)
        assert not [t for t in parsed.texts if "**" in t]
        (states,) = [t for t in parsed.tables if t[0][0][1] == "state"]
        total = states[-1]
        assert total[0][1] == "total" and total[-2][1] == f"${rendered.report['fleet']['cost_usd']:,.2f}"
        assert "<tr class='total'>" in page


def test_only_numbers_are_right_aligned(rendered: Rendered) -> None:
    for text in (rendered.markdown, rendered.email["text"]):
        tables = markdown_tables(text)
        assert len(tables) >= 10
        for table in tables:
            for c, name in enumerate(table.header):
                values = [row[c].strip("*") for row in table.rows if row[c]]  # the total row is bold
                numeric = bool(values) and all(NUMERIC.match(v) for v in values)
                assert table.right[c] == numeric, (table.title, name, values[:3])
    for page in (rendered.html, rendered.email["html"]):
        for table in html_tables(page).tables:
            for row in table[1:]:  # below the header
                for css, value in row:
                    if value and css == "n":
                        assert NUMERIC.match(value), value
                    elif value and css == "t" and NUMERIC.match(value):
                        pytest.fail(f"a number left aligned: {value}")


def test_price_sources_are_footnotes_in_every_format(rendered: Rendered) -> None:
    known = sources(rendered)
    assert len(known) == 2 and all(len(s) > 60 for s in known)
    priced = 0
    for table in markdown_tables(rendered.markdown):
        if "priced by" not in table.header:
            continue
        priced += 1
        column = table.header.index("priced by")
        used = {n for row in table.rows for n in MARKER.findall(row[column])}
        assert used, table.title
        for row in table.rows:
            assert not any(s in cell for s in known for cell in row), (table.title, row)
        notes = [line for line in table.after if MARKER.match(line.removeprefix("- "))]
        assert {MARKER.match(n.removeprefix("- ")).group(1) for n in notes} == used, table.title  # type: ignore[union-attr]
        assert len(notes) == len(used), table.title  # each source's text once below the table
        for note in notes:
            number, text = note.removeprefix("- [").split("] ", 1)
            if int(number) <= len(known):  # the fleet's sources are numbered first, in their order
                assert text == known[int(number) - 1], note
    assert priced >= 6  # states, clusters, namespaces, models, idle workloads, teams (and spot)
    for page in (rendered.html, rendered.email["html"]):
        assert "href='#t0-src-1'" in page and "id='t0-src-1'" in page
        for table in html_tables(page).tables:
            assert not any(s in value for s in known for row in table for _, value in row)
    slack = slack_text(rendered.slack)
    idle = next(
        b["text"]["text"] for b in rendered.slack["blocks"] if "Top idle workloads" in b.get("text", {}).get("text", "")
    )
    assert MARKER.search(idle) and not any(s in idle for s in known)
    for source in known:
        assert slack.count(source) <= 1
    assert "Price sources: [1] " + known[0] in slack
    assert check_blocks(rendered.slack) == []


def test_the_mig_table_lists_only_gpus_that_have_mig(rendered: Rendered) -> None:
    catalog = load_catalog()
    (mig,) = [t for t in markdown_tables(rendered.markdown) if t.title.startswith("MIG fit")]
    models = {row[mig.header.index("GPU model")] for row in mig.rows}
    assert models
    for model in models:
        catalog.gpu(model)  # raises NotMigCapable or UnknownGpuModel otherwise
    workloads = rendered.report["mig_fit"]["workloads"]
    without = {w["gpu_model"] for w in workloads if w["mig_capable"] is False}
    assert without == {"NVIDIA L4", "NVIDIA A10G"}
    left_out = sum(1 for w in workloads if w["mig_capable"] is False)
    assert f"- Not in the table: {left_out} workloads on GPU models without MIG (NVIDIA A10G, NVIDIA L4)" in "\n".join(
        mig.after
    )
    for text in (rendered.html, rendered.email["text"]):
        assert "is not MIG-capable" not in text


def test_no_python_literal_leaks_into_the_text(rendered: Rendered) -> None:
    for text in (
        rendered.markdown,
        rendered.html,
        rendered.email["text"],
        rendered.email["html"],
        slack_text(rendered.slack),
    ):
        assert "{'" not in text and "': '" not in text and "= {" not in text and "['" not in text


def test_times_print_to_the_minute_in_utc(rendered: Rendered) -> None:
    window = rendered.report["window"]
    assert window["start"] == "2026-11-13T10:17:00+00:00"  # --start -1w from NOW, floored to its minute
    line = "Window: 2026-11-13 10:17 to 2026-11-20 00:00 UTC (end exclusive)"
    for text in (
        rendered.markdown,
        rendered.html,
        rendered.email["text"],
        rendered.email["html"],
        slack_text(rendered.slack),
    ):
        assert line.removeprefix("Window: ") in text
        assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d+", text)  # no fractions of a second
        assert not re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", text)  # no raw ISO stamps
    (idle,) = [t for t in markdown_tables(rendered.markdown) if t.title.startswith("Idle workloads")]
    column = idle.header.index("last active (UTC)")
    assert all(CLEAN_TIME.fullmatch(row[column]) for row in idle.rows)


def test_a_cluster_section_that_adds_up_to_the_fleet(rendered: Rendered) -> None:
    report = rendered.report
    rows = report["by_cluster"]
    assert {r["cluster"] for r in rows} == {"train-use1", "serve-use1"}
    assert sum(r["gpus"] for r in rows) == report["fleet"]["gpus"] == 16
    assert sum(r["gpu_hours"] for r in rows) == pytest.approx(report["fleet"]["gpu_hours"], abs=1e-3)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(report["fleet"]["cost_usd"], abs=0.02)
    assert sum(r["idle_cost_usd"] for r in rows) == pytest.approx(report["idle_waste"]["cost_usd"], abs=0.02)
    (table,) = [t for t in markdown_tables(rendered.markdown) if t.title == "By cluster"]
    assert [row[0] for row in table.rows] == [r["cluster"] for r in rows]
    assert [row[table.header.index("cost")] for row in table.rows] == [f"${r['cost_usd']:,.2f}" for r in rows]
    assert "<h2>By cluster</h2>" in rendered.html
    assert "*Spend by cluster*" in slack_text(rendered.slack)


def test_a_team_section_from_the_teams_setting(rendered: Rendered) -> None:
    rows = {r["team"]: r for r in rendered.report["cost_allocation"]["by_team"]}
    assert {"ml", "serving"} <= set(rows)
    assert rows["serving"]["namespaces"] == "recsys, search, vision"
    assert sum(r["total_cost_usd"] for r in rows.values()) == pytest.approx(
        rendered.report["fleet"]["cost_usd"], abs=0.05
    )
    (table,) = [t for t in markdown_tables(rendered.markdown) if t.title.startswith("Cost by team")]
    assert "- Teams are namespaces grouped by the `teams` setting" in "\n".join(table.after)
    assert "- Idle cost (GPU-time no pod held) is its own line" in "\n".join(table.after)
    serving = next(row for row in table.rows if row[0] == "serving")
    assert MARKER.search(serving[table.header.index("priced by")])
    assert "*Spend by team*\n• serving: " in slack_text(rendered.slack)


def test_a_team_scoped_report(sim_warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(sim_warehouse.parent)
    monkeypatch.setenv("GPULEDGER_TEAMS", '{"ml": ["ml-*"], "serving": ["search", "recsys", "vision"]}')
    settings = load_settings(None)
    lake = Lake(sim_warehouse)
    fleet = reporting.fleet_report(lake, settings, start=None, end=None, now=NOW, refresh=False)
    team = reporting.fleet_report(lake, settings, start=None, end=None, now=NOW, refresh=False, team="serving")
    assert team["scope"] == {"team": "serving", "namespaces": ["recsys", "search", "vision"]}
    assert fleet["scope"] == {"team": None, "namespaces": []}
    line = next(r for r in fleet["cost_allocation"]["by_team"] if r["team"] == "serving")
    assert team["fleet"]["cost_usd"] == pytest.approx(line["total_cost_usd"], abs=0.02)
    assert 0 < team["fleet"]["gpus"] < fleet["fleet"]["gpus"]
    assert {w["namespace"] for w in team["idle_waste"]["by_workload"]} <= {"recsys", "search", "vision"}
    text = to_markdown(team)
    assert text.startswith("# gpuledger report: team serving\n")
    assert "Team serving: namespaces recsys, search, vision" in text
    assert f"- GPUs its pods held: **{team['fleet']['gpus']}**" in text
    with pytest.raises(UnknownTeam) as caught:
        reporting.fleet_report(lake, settings, start=None, end=None, now=NOW, refresh=False, team="nobody")
    assert str(caught.value) == (
        "team 'nobody' is not in the teams setting (teams: ml, serving): add it, or pass one of them"
    )
    assert isinstance(caught.value, AnalysisError)


def test_the_reconciliation_is_shown_when_its_inputs_exist(rendered: Rendered) -> None:
    assert rendered.report["reconciliation"]["missing_inputs"] == []
    titles = [t.title for t in markdown_tables(rendered.markdown)]
    assert "Reconciliation: OpenCost's GPU cost to the fleet cost" in titles
    assert "Reconciliation by namespace" in titles


def test_the_reconciliation_says_why_it_is_missing(lake: Lake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    append(lake, GPU_SAMPLES, sample_rows("GPU-a", range(90), util=0.0, fb_used=0))  # samples, no pod ever
    report = reporting.fleet_report(
        lake, load_settings(None), start=T0.isoformat(), end=None, now=T0 + dt.timedelta(hours=2)
    )
    assert report["reconciliation"]["missing_inputs"][0] == NO_PODS
    for text in (to_markdown(report), to_html(report)):
        assert "Reconciliation with OpenCost and Kubecost" in text
        assert "Not shown: no pod held a GPU in this window" in text
        assert "OpenCost: GPU cost allocated to pods" not in text
