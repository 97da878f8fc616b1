"""The CLI as a user meets it: exit codes and the exact one-line errors, and the report contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPORT_KEYS = {
    "window": {"start", "end"},
    "fleet": {"gpus", "gpu_hours", "cost_usd"},
    "states": {"active", "idle_held", "idle_allocated", "unallocated", "no_data"},
    "utilization": {"mean_pct", "by_namespace", "by_model"},
    "idle_waste": {"gpu_hours", "cost_usd", "by_workload"},
    "mig_fit": {"workloads", "gpus_now", "gpus_needed", "savings_usd_month"},
    "spot": {"candidates", "savings_usd_month"},
}


def error_line(result) -> str:
    text = result.stderr if result.stderr else result.output
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_report_json_has_the_stable_keys_and_states_sum_to_gpu_hours(cli, sim_warehouse: Path) -> None:
    result = cli("report", "--warehouse", str(sim_warehouse), "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key, inner in REPORT_KEYS.items():
        assert inner <= set(report[key]), key
    assert report["fleet"]["gpus"] == 16
    assert report["fleet"]["gpu_hours"] == pytest.approx(sum(report["states"].values()), rel=1e-9)
    assert report["fleet"]["gpu_hours"] == pytest.approx(16 * 72, rel=1e-9)  # 3 days of history, no_data included
    # Default window: report_days (7) ending just after the newest minute.
    assert report["window"] == {"start": "2026-11-13T00:00:00+00:00", "end": "2026-11-20T00:00:00+00:00"}


def test_report_window_flags(cli, sim_warehouse: Path) -> None:
    result = cli(
        "report",
        "--warehouse",
        str(sim_warehouse),
        "--start",
        "2026-11-18",
        "--end",
        "2026-11-18T12:00Z",
        "--format",
        "json",
    )
    report = json.loads(result.stdout)
    assert report["fleet"]["gpu_hours"] == pytest.approx(16 * 12)


def test_report_markdown_shows_each_state(cli, sim_warehouse: Path) -> None:
    result = cli("report", "--warehouse", str(sim_warehouse))
    assert result.exit_code == 0
    for state in REPORT_KEYS["states"]:
        assert f"| {state} |" in result.stdout
    assert "# gpuledger fleet report" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["report", "--warehouse", "/nonexistent/wh"],
            "Error: warehouse /nonexistent/wh does not exist: create it with `gpuledger simulate --warehouse "
            "/nonexistent/wh` or `gpuledger collect --warehouse /nonexistent/wh`, or pass the right --warehouse",
        ),
        (
            ["query", "--warehouse", "/nonexistent/wh", "SELECT 1"],
            "Error: warehouse /nonexistent/wh does not exist: create it with `gpuledger simulate --warehouse "
            "/nonexistent/wh` or `gpuledger collect --warehouse /nonexistent/wh`, or pass the right --warehouse",
        ),
        (
            ["report", "--warehouse", "{sim}", "--start", "yesterday"],
            "Error: invalid time window: cannot read 'yesterday' as a time; use ISO-8601 (2026-11-01, "
            "2026-11-01T12:00Z) or relative (-7d, -12h, now)",
        ),
        (
            ["report", "--warehouse", "{sim}", "--start", "2026-11-19", "--end", "2026-11-18"],
            "Error: invalid time window: start 2026-11-19T00:00:00+00:00 is not before end "
            "2026-11-18T00:00:00+00:00; use ISO-8601 (2026-11-01, 2026-11-01T12:00Z) or relative (-7d, -12h, now)",
        ),
        (
            ["query", "--warehouse", "{sim}", "SELEC count(*) FROM gpu_samples"],
            'Error: query failed: Parser Error: syntax error at or near "SELEC"',
        ),
        (
            ["query", "--warehouse", "{sim}", "SELECT * FROM gpu_sample"],
            "Error: query failed: Catalog Error: Table with name gpu_sample does not exist!",
        ),
        (
            ["report"],
            "Error: no warehouse given: pass --warehouse DIR (or set `warehouse` in gpuledger.toml)",
        ),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(cli, sim_warehouse: Path, args: list[str], message: str) -> None:
    result = cli(*[a.replace("{sim}", str(sim_warehouse)) for a in args])
    assert result.exit_code == 2
    assert error_line(result) == message


def test_a_file_given_as_warehouse(cli, tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    result = cli("report", "--warehouse", str(path))
    assert result.exit_code == 2
    assert (
        error_line(result)
        == f"Error: warehouse {path} cannot be used: it is not a directory; check the path and its permissions"
    )


def test_an_empty_warehouse_says_how_to_fill_it(cli, tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    result = cli("report", "--warehouse", str(tmp_path / "wh"))
    assert result.exit_code == 2
    wh = tmp_path / "wh"
    assert error_line(result) == (
        f"Error: warehouse {wh} holds no GPU samples yet: fill it with `gpuledger simulate --warehouse {wh}` "
        "or `gpuledger collect`"
    )


def test_query_formats(cli, sim_warehouse: Path) -> None:
    sql = "SELECT state, count(*) AS minutes FROM gpu_minutes GROUP BY state ORDER BY state"
    as_csv = cli("query", "--warehouse", str(sim_warehouse), sql, "--format", "csv")
    assert as_csv.exit_code == 0
    assert as_csv.stdout.splitlines()[0] == "state,minutes"
    rows = json.loads(cli("query", "--warehouse", str(sim_warehouse), sql, "--format", "json").stdout)
    assert [r["state"] for r in rows] == sorted(r["state"] for r in rows)
    assert sum(r["minutes"] for r in rows) == 16 * 3 * 1440
    table = cli("query", "--warehouse", str(sim_warehouse), sql)
    assert "idle_held" in table.stdout


def test_bad_config_file_and_bad_environment(cli, sim_warehouse: Path, tmp_path: Path, monkeypatch) -> None:
    missing = tmp_path / "nope.toml"
    result = cli("--config", str(missing), "report", "--warehouse", str(sim_warehouse))
    assert (result.exit_code, error_line(result)) == (
        2,
        f"Error: config file {missing} does not exist: pass an existing file to --config",
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("active_threshold_pct = [\n")
    result = cli("--config", str(broken), "report", "--warehouse", str(sim_warehouse))
    assert result.exit_code == 2 and error_line(result).startswith(f"Error: config file {broken} is not valid TOML")
    monkeypatch.setenv("GPULEDGER_ACTIVE_THRESHOLD_PCT", "250")
    result = cli("report", "--warehouse", str(sim_warehouse))
    assert (result.exit_code, error_line(result)) == (
        2,
        "Error: the variable GPULEDGER_ACTIVE_THRESHOLD_PCT should be less than or equal to 100",
    )


def test_config_file_and_environment_change_the_states(cli, sim_warehouse: Path, tmp_path: Path, monkeypatch) -> None:
    wh = tmp_path / "wh"
    shutil.copytree(sim_warehouse, wh)
    base = json.loads(cli("report", "--warehouse", str(wh), "--format", "json").stdout)["states"]
    config = tmp_path / "gpuledger.toml"
    config.write_text("active_threshold_pct = 101.0\n")
    monkeypatch.setenv("GPULEDGER_ACTIVE_THRESHOLD_PCT", "100")
    strict = json.loads(cli("--config", str(config), "report", "--warehouse", str(wh), "--format", "json").stdout)
    assert strict["states"]["active"] < base["active"]  # the environment (100) won over the file (invalid 101)
    assert sum(strict["states"].values()) == pytest.approx(sum(base.values()))


def test_simulate_twice_adds_nothing(cli, tmp_path: Path) -> None:
    args = [
        "simulate",
        "--warehouse",
        str(tmp_path / "wh"),
        "--gpus",
        "4",
        "--days",
        "1",
        "--end",
        "2026-11-20",
    ]
    first, second = cli(*args), cli(*args)
    assert first.exit_code == second.exit_code == 0
    assert "5,040 samples" in first.stderr  # 4 GPUs x 1,440 minutes, less the planted 3-hour collector outage
    assert "0 samples, 0 allocation rows, 0 rollup partitions computed" in second.stderr


def test_demo_no_dashboard_prints_a_report_and_refuses_foreign_dirs(cli, tmp_path: Path) -> None:
    wh = tmp_path / "demo"
    result = cli("demo", "--warehouse", str(wh), "--gpus", "8", "--days", "1", "--no-dashboard")
    assert result.exit_code == 0, result.output
    assert "# gpuledger fleet report" in result.stdout and "GPUs: **8**" in result.stdout
    again = cli("demo", "--warehouse", str(wh), "--gpus", "8", "--days", "1", "--no-dashboard")
    assert again.exit_code == 0 and again.stdout == result.stdout
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    refused = cli("demo", "--warehouse", str(foreign), "--no-dashboard")
    assert refused.exit_code == 2
    assert (
        error_line(refused) == f"Error: {foreign} exists and was not made by `gpuledger demo`: pass another --warehouse"
    )
    assert (foreign / "keep.txt").read_text() == "precious"


def _no_nan(text: str) -> dict:
    def refuse(constant: str) -> float:
        raise AssertionError(f"the report holds {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_cost_shows_its_price_source(cli, sim_warehouse: Path) -> None:
    report = _no_nan(cli("report", "--warehouse", str(sim_warehouse), "--format", "json").stdout)
    fleet = report["fleet"]
    assert fleet["cost_usd"] > 0
    assert sum(s["cost_usd"] for s in fleet["price_sources"]) == pytest.approx(fleet["cost_usd"], abs=0.05)
    assert all(s["price_source"] for s in fleet["price_sources"])
    assert sum(report["states_cost_usd"].values()) == pytest.approx(fleet["cost_usd"], abs=0.05)
    assert report["idle_waste"]["cost_usd"] <= fleet["cost_usd"]
    assert all(w["price_source"] for w in report["idle_waste"]["by_workload"])
    assert all(c["on_demand_price_source"] and c["spot_price_source"] for c in report["spot"]["candidates"])
    teams = report["cost_allocation"]["by_team"]
    assert sum(t["total_cost_usd"] for t in teams) == pytest.approx(fleet["cost_usd"], abs=0.05)
    assert report["assumptions"]["active_threshold_pct"] == 5.0


def test_html_report_is_one_self_contained_page(cli, sim_warehouse: Path) -> None:
    page = cli("report", "--warehouse", str(sim_warehouse), "--format", "html").stdout
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for heading in ("GPU-hours by state", "Idle workloads", "Cost by team", "MIG fit", "Spot candidates"):
        assert heading in page


def test_an_empty_window_says_where_the_data_is(cli, sim_warehouse: Path) -> None:
    result = cli("report", "--warehouse", str(sim_warehouse), "--start", "2020-01-01", "--end", "2020-01-02")
    assert result.exit_code == 2
    assert error_line(result).startswith(
        "Error: no GPU samples between 2020-01-01T00:00:00+00:00 and 2020-01-02T00:00:00+00:00: the warehouse holds "
        "samples from 2026-11-17T00:00:"
    )


def test_shared_idle_cost_and_teams_from_the_config(cli, sim_warehouse: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    shutil.copytree(sim_warehouse, wh)
    config = tmp_path / "gpuledger.toml"
    config.write_text('idle_cost = "shared"\n[teams]\nplatform = ["ml-*", "research", "vision"]\n')
    report = _no_nan(cli("--config", str(config), "report", "--warehouse", str(wh), "--format", "json").stdout)
    teams = {t["team"]: t for t in report["cost_allocation"]["by_team"]}
    assert "(idle: unallocated)" not in teams and teams["platform"]["shared_idle_usd"] > 0
    assert sum(t["total_cost_usd"] for t in teams.values()) == pytest.approx(report["fleet"]["cost_usd"], abs=0.05)


def test_report_team_flag(cli, sim_warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPULEDGER_TEAMS", '{"serving": ["search", "recsys", "vision"]}')
    result = cli("report", "--warehouse", str(sim_warehouse), "--team", "serving", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["scope"] == {"team": "serving", "namespaces": ["recsys", "search", "vision"]}
    assert {w["namespace"] for w in report["idle_waste"]["by_workload"]} <= {"recsys", "search", "vision"}
    unknown = cli("report", "--warehouse", str(sim_warehouse), "--team", "nobody")
    assert unknown.exit_code == 2
    assert error_line(unknown) == (
        "Error: team 'nobody' is not in the teams setting (teams: serving): add it, or pass one of them"
    )
    both = cli("report", "--warehouse", str(sim_warehouse), "--team", "serving", "--send")
    assert both.exit_code == 2
    assert "--team and --send together" in both.output
