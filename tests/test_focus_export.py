"""`gpuledger export focus`: GPU cost allocation as FOCUS, checked by the FinOps Foundation's own validator, against
the report's numbers, and as a file (CSV and Parquet the same rows, bad arguments one line, atomic replacement)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result
from polars.testing import assert_frame_equal

from analysis import focus
from analysis.states import STATES
from analysis.window import Window
from exposition import focus_file
from gpuledger.cli import main

REPO = Path(__file__).resolve().parent.parent
VALIDATOR_VENV = REPO / ".cache" / "focus-validator-venv"
VALIDATOR_PINS = REPO / "tests" / "focus-validator.txt"
PRE_GA_NAMES = {
    "ProviderName": "Provider",
    "PublisherName": "Publisher",
    "InvoiceIssuerName": "InvoiceIssuer",
    "ResourceId": "ResourceID",
}
"""focus-validator 1.0.0's "1.0" rules name four columns as the 1.0 drafts did (its ``Provider_Required.yaml``,
``Publisher_*``, ``InvoiceIssuer_*``, ``ResourceID_*``); FOCUS 1.0 GA renamed them (FOCUS_Spec
``specification/columns/provider.md``: Column ID ProviderName, ...). The validator reads a copy with those names, so
each of its rules checks our values; its SkuPriceId rule reads ``ChargeType``, the drafts' ChargeCategory."""


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def exported(sim_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The simulated fleet exported once as CSV and as Parquet (its own copy: the export may refresh the rollup)."""
    root = tmp_path_factory.mktemp("focus") / "wh"
    shutil.copytree(sim_warehouse, root)
    out = root.parent
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("GPULEDGER_")]:
            mp.delenv(name)
        mp.chdir(out)
        paths = {"warehouse": root, "csv": out / "gpu.csv", "parquet": out / "gpu.parquet"}
        for fmt in ("csv", "parquet"):
            result = _run("export", "focus", "--warehouse", str(root), "--out", str(paths[fmt]))
            assert result.exit_code == 0, result.output
        yield paths


def _read_csv(path: Path) -> pl.DataFrame:
    """A FOCUS CSV read back with the export's column types (times as written: ``2026-11-17T00:00:00Z``)."""
    raw = pl.read_csv(path, infer_schema=False)
    return raw.select(
        (
            pl.col(name).str.to_datetime(focus_file.CSV_TIME_FORMAT, time_zone="UTC", time_unit="us")
            if isinstance(dtype, pl.Datetime)
            else pl.col(name).str.to_lowercase().eq("true")
            if dtype == pl.Boolean
            else pl.col(name).cast(dtype)
        ).alias(name)
        for name, dtype in focus.SCHEMA.items()
    )


def test_csv_and_parquet_hold_the_same_rows(exported: dict[str, Path]) -> None:
    parquet = pl.read_parquet(exported["parquet"])
    assert parquet.schema == focus.SCHEMA
    assert parquet.height > 10
    assert_frame_equal(_read_csv(exported["csv"]), parquet, check_exact=False, rel_tol=1e-12)


def test_one_row_per_node_gpu_model_workload_and_day(exported: dict[str, Path]) -> None:
    rows = pl.read_parquet(exported["parquet"])
    key = [
        "x_gpuledger_cluster",
        "x_gpuledger_node",
        "x_gpuledger_gpu_model",
        "x_gpuledger_namespace",
        "x_gpuledger_workload",
        "ChargePeriodStart",
    ]
    assert rows.select(key).is_duplicated().sum() == 0
    # without the node, still unique on the simulated fleet (one node per workload, model and day)
    assert rows.select([k for k in key if k != "x_gpuledger_node"]).is_duplicated().sum() == 0
    assert rows.filter(pl.col("x_gpuledger_workload").is_null())["x_gpuledger_namespace"].null_count() == (
        rows.filter(pl.col("x_gpuledger_workload").is_null()).height
    )
    days = rows.select((pl.col("ChargePeriodEnd") - pl.col("ChargePeriodStart")).unique())
    assert days.to_series().to_list() == [dt.timedelta(days=1)]


def test_billed_cost_adds_up_to_the_reports_fleet_cost(exported: dict[str, Path]) -> None:
    rows = pl.read_parquet(exported["parquet"])
    window = rows.select(pl.col("ChargePeriodStart").min(), pl.col("ChargePeriodEnd").max()).row(0)
    report = _run(
        "report",
        "--warehouse",
        str(exported["warehouse"]),
        "--start",
        window[0].isoformat(),
        "--end",
        window[1].isoformat(),
        "--format",
        "json",
    )
    assert report.exit_code == 0, report.output
    fleet = json.loads(report.stdout)
    assert round(float(rows["BilledCost"].sum()), 2) == fleet["fleet"]["cost_usd"]
    assert round(float(rows["ConsumedQuantity"].sum()), 4) == fleet["fleet"]["gpu_hours"]
    for state in STATES:
        assert round(float(rows[f"x_gpuledger_{state}_gpu_hours"].sum()), 4) == fleet["states"][state], state
        assert round(float(rows[f"x_gpuledger_{state}_cost_usd"].sum()), 2) == fleet["states_cost_usd"][state], state
    for column in ("EffectiveCost", "ListCost", "ContractedCost", "PricingCurrencyEffectiveCost"):
        assert rows[column].to_list() == rows["BilledCost"].to_list()


def test_the_state_split_adds_up_on_every_row(exported: dict[str, Path]) -> None:
    rows = pl.read_parquet(exported["parquet"])
    hours = pl.sum_horizontal(f"x_gpuledger_{s}_gpu_hours" for s in STATES)
    cost = pl.sum_horizontal(f"x_gpuledger_{s}_cost_usd" for s in STATES)
    check = rows.select(
        ((hours - pl.col("ConsumedQuantity")).abs() < 1e-9).all().alias("hours"),
        ((cost - pl.col("BilledCost")).abs() < 1e-9).all().alias("cost"),
        ((pl.col("PricingQuantity") * pl.col("ListUnitPrice") - pl.col("ListCost")).abs() < 1e-9).all().alias("price"),
    )
    assert check.row(0) == (True, True, True)
    assert (rows["x_gpuledger_active_gpu_hours"] > 0).any() and (rows["x_gpuledger_unallocated_gpu_hours"] > 0).any()


def test_columns_say_where_each_number_came_from(exported: dict[str, Path]) -> None:
    rows = pl.read_parquet(exported["parquet"])
    row = rows.filter(pl.col("x_gpuledger_workload").is_not_null()).row(0, named=True)
    assert row["ChargeCategory"] == "Usage" and row["ServiceCategory"] == "Compute"
    assert row["BillingCurrency"] == row["PricingCurrency"] == "USD"
    assert row["ConsumedUnit"] == row["PricingUnit"] == "GPU-Hours"
    assert row["x_gpuledger_price_source"] in row["ChargeDescription"]
    assert row["ResourceName"] == row["x_gpuledger_node"]
    assert row["ResourceId"].startswith("aws:///")  # the node's provider id, as the simulated nodes carry it
    assert row["RegionId"] == "us-east-1" and row["ProviderName"] == "AWS"
    assert row["InvoiceId"] is None
    tags = json.loads(row["Tags"])
    assert tags["gpuledger/namespace"] == row["x_gpuledger_namespace"]
    assert tags["gpuledger/workload"] == row["x_gpuledger_workload"]
    assert tags["gpuledger/team"] == row["x_gpuledger_namespace"]  # no `teams` setting: a namespace is its team
    categories = dict(zip(rows["x_gpuledger_capacity_type"], rows["PricingCategory"], strict=True))
    assert categories == {"on-demand": "Standard", "spot": "Dynamic"}


def _hand_made() -> tuple[pl.DataFrame, pl.DataFrame]:
    day = dt.date(2026, 11, 30)
    base = {
        "cluster": "c1",
        "node": "n1",
        "date": day,
        "gpu_model": "NVIDIA H100 80GB HBM3",
        "usd_per_gpu_hour": 2.0,
        "price_source": "override p5.48xlarge",
        "price_fallback": False,
    }
    held = {"namespace": "ml-a", "workload": "train"}
    nobody = {"namespace": None, "workload": None}
    groups = pl.DataFrame(
        [
            {**base, **held, "state": "active", "split_method": None, "gpu_hours": 3.0},
            {**base, **held, "state": "idle_held", "split_method": "memory share", "gpu_hours": 1.5},
            {**base, **nobody, "state": "unallocated", "split_method": None, "gpu_hours": 2.0},
        ]
    ).with_columns((pl.col("gpu_hours") * pl.col("usd_per_gpu_hour")).alias("cost_usd"))
    nodes = pl.DataFrame(
        {
            "cluster": ["c1"],
            "node": ["n1"],
            "date": [day],
            "instance_type": ["p5.48xlarge"],
            "capacity_type": ["spot"],
            "region": ["us-east-1"],
            "zone": ["us-east-1a"],
            "provider_id": ["aws:///us-east-1a/i-0abc1234"],
        }
    )
    return groups, nodes


def test_hand_made_groups_by_hand() -> None:
    groups, nodes = _hand_made()
    window = Window(dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    rows = focus.focus_rows(groups, nodes, window, {"ml": ["ml-*"]})
    assert rows.height == 2
    held, idle = rows.row(0, named=True), rows.row(1, named=True)
    assert (held["x_gpuledger_workload"], idle["x_gpuledger_workload"]) == ("train", None)
    assert held["BilledCost"] == 9.0 and held["ConsumedQuantity"] == 4.5 and held["ListUnitPrice"] == 2.0
    assert (held["x_gpuledger_active_cost_usd"], held["x_gpuledger_idle_held_cost_usd"]) == (6.0, 3.0)
    assert held["x_gpuledger_split_by"] == "memory share"
    assert held["ChargePeriodStart"] == window.start  # cut at the window's start
    assert held["ChargePeriodEnd"] == window.end
    assert held["BillingPeriodStart"] == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert held["BillingPeriodEnd"] == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert held["PricingCategory"] == "Dynamic" and held["SkuId"] == "p5.48xlarge"
    assert held["SkuPriceId"] == "p5.48xlarge:spot:us-east-1:2"
    assert held["ResourceId"] == "aws:///us-east-1a/i-0abc1234" and held["AvailabilityZone"] == "us-east-1a"
    assert json.loads(held["Tags"]) == {
        "gpuledger/cluster": "c1",
        "gpuledger/namespace": "ml-a",
        "gpuledger/workload": "train",
        "gpuledger/team": "ml",
    }
    assert json.loads(idle["Tags"]) == {"gpuledger/cluster": "c1"}
    assert held["ChargeDescription"] == (
        "4.5000 GPU-hours of NVIDIA H100 80GB HBM3 on node n1 (cluster c1) held by ml-a/train, "
        "2026-11-30T12:00Z to 2026-12-01T00:00Z (active 3.0000, idle_held 1.5000); shared GPU-minutes split by "
        "memory share; x 2 USD per GPU-hour from override p5.48xlarge"
    )


def test_a_node_unknown_to_the_warehouse_keeps_its_cluster_and_node_as_resource() -> None:
    groups, nodes = _hand_made()
    window = Window(dt.datetime(2026, 11, 30, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    row = focus.focus_rows(groups, nodes.head(0), window).row(0, named=True)
    assert row["ResourceId"] == "c1/n1" and row["RegionId"] is None and row["ProviderName"] == "unknown"
    assert row["PricingCategory"] == "Other" and row["SkuId"] == "GPU NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="session")
def focus_validator() -> Path:
    """The venv holding focus-validator (``tests/focus-validator.txt``): .ci/run makes it; made here when missing.
    Skipped only when pip cannot install it."""
    python = VALIDATOR_VENV / "bin" / "python"
    if not _validator_works(python):
        failed = _install_validator(python)
        if failed is not None:
            pytest.skip(
                f"focus-validator could not be installed from the package index into {VALIDATOR_VENV}: {failed}"
            )
    return python


def _install_validator(python: Path) -> str | None:
    """Make the validator's venv; None when it works, else why not (pip's last line)."""
    shutil.rmtree(VALIDATOR_VENV, ignore_errors=True)
    VALIDATOR_VENV.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", "--without-pip", str(VALIDATOR_VENV)],
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "-r", str(VALIDATOR_PINS)],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"{' '.join(step[1:4])} ran past 900 s"
        if done.returncode:
            return ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
    return None if _validator_works(python) else "it installed but `import focus_validator.main` fails"


def _validator_works(python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", "import focus_validator.main"], capture_output=True).returncode == 0


def _validate(python: Path, data: Path, report: Path) -> ET.Element:
    """Run focus-validator (FOCUS 1.0 rules) on ``data``; its JUnit-style report's root."""
    site = subprocess.run(
        [
            str(python),
            "-c",
            "import focus_validator, pathlib; print(pathlib.Path(focus_validator.__file__).parent.parent)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # its currency-code check reads focus_validator/utils/currency_codes.csv relative to the working directory
    done = subprocess.run(
        [
            str(python),
            "-m",
            "focus_validator.main",
            "--data-file",
            str(data),
            "--validate-version",
            "1.0",
            "--output-type",
            "unittest",
            "--output-destination",
            str(report),
        ],
        cwd=site,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return ET.parse(report).getroot()


def _failures(root: ET.Element) -> list[str]:
    return [
        f"{case.get('name')}: {child.get('message')}"
        for case in root.iter("testcase")
        for child in case
        if child.tag in ("failure", "error")
    ]


def _validator_copy(rows: pl.DataFrame, path: Path) -> Path:
    renamed = rows.rename(PRE_GA_NAMES).with_columns(pl.col("ChargeCategory").alias("ChargeType"))
    path.write_bytes(focus_file.render(renamed, focus_file.format_of(path)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_focus_validator_passes_the_export(
    exported: dict[str, Path], focus_validator: Path, tmp_path: Path, fmt: str
) -> None:
    rows = pl.read_parquet(exported["parquet"]) if fmt == "parquet" else _read_csv(exported["csv"])
    root = _validate(focus_validator, _validator_copy(rows, tmp_path / f"v.{fmt}"), tmp_path / "report.xml")
    assert int(root.get("tests") or 0) > 100  # every rule of the 1.0 set ran
    assert _failures(root) == []


@pytest.mark.slow
def test_the_focus_validator_catches_a_broken_copy(
    exported: dict[str, Path], focus_validator: Path, tmp_path: Path
) -> None:
    rows = pl.read_parquet(exported["parquet"]).with_columns(
        pl.lit("dollars").alias("BillingCurrency"), pl.lit("Metered").alias("ChargeFrequency")
    )
    root = _validate(focus_validator, _validator_copy(rows, tmp_path / "bad.parquet"), tmp_path / "report.xml")
    failed = " ".join(_failures(root))
    assert "BillingCurrency" in failed and "ChargeFrequency" in failed


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--out", "gpu.txt"], "Error: --out gpu.txt: unknown file type '.txt'; name the file .csv or .parquet\n"),
        (["--out", "gpu"], "Error: --out gpu: unknown file type '(no extension)'; name the file .csv or .parquet\n"),
        (
            ["--out", "missing/gpu.csv"],
            "Error: cannot write --out missing/gpu.csv (the folder missing does not exist): pass a file in a folder "
            "you can write\n",
        ),
        (
            ["--out", "gpu.csv", "--start", "yesterday-ish"],
            "Error: invalid time window: cannot read 'yesterday-ish' as a time; use ISO-8601 (2026-11-01, "
            "2026-11-01T12:00Z) or relative (-7d, -12h, now)\n",
        ),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(
    wh: object, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], error: str
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("export", "focus", "--warehouse", str(tmp_path / "wh"), *args)
    assert result.exit_code == 2
    assert result.stderr == error
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_window_without_data_is_an_error_and_writes_nothing(
    wh: object, cli: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "gpu.csv"
    result = cli(
        "export",
        "focus",
        "--warehouse",
        str(tmp_path / "wh"),
        "--start",
        "2020-01-01",
        "--end",
        "2020-01-02",
        "--out",
        str(out),
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("Error: no GPU samples between 2020-01-01T00:00:00+00:00")
    assert not out.exists()


def test_an_existing_file_is_replaced_atomically(wh: object, cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "gpu.parquet"
    out.write_text("an older export\n")
    old = out.stat().st_ino
    result = cli("export", "focus", "--warehouse", str(tmp_path / "wh"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {pl.read_parquet(out).height} FOCUS rows to {out}: ")
    assert "export focus: writing" in result.stderr  # progress on stderr
    assert out.stat().st_ino != old  # renamed into place, never rewritten in place
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    groups, nodes = _hand_made()
    window = Window(dt.datetime(2026, 11, 30, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    out = tmp_path / "gpu.csv"
    out.write_text("an older export\n")

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(focus_file.CannotWrite, match=r"cannot write --out .*gpu\.csv \(No space left on device\)"):
        focus_file.write(focus.focus_rows(groups, nodes, window), out)
    assert out.read_text() == "an older export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["gpu.csv"]
