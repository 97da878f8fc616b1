"""Node prices from the bill (analysis.pricing.bill, price_nodes with a bill): a hand-checked FOCUS file whose
effective costs differ from list prices, matched by resource id, else by instance type, region and capacity type in
the billing period; and a report whose dollars follow the bill, worked by hand."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import Result

from analysis.pricing.bill import bill_rates, period_label, resource_key
from analysis.pricing.frames import price_nodes
from collector.focus import read_focus
from tests.pricing_nodes import AWS_OD, CATALOG, H100, nodes
from warehouse.lake import Lake
from warehouse.schema import NODES

COLUMNS = (
    "BillingPeriodStart,BillingPeriodEnd,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ServiceCategory,"
    "ProviderName,BillingAccountId,ResourceId,RegionId,PricingCategory,SkuPriceDetails,ConsumedQuantity,"
    "ConsumedUnit,EffectiveCost,BilledCost,ListCost,BillingCurrency"
)
NOV = "2026-11-01T00:00:00Z,2026-12-01T00:00:00Z"


def line(
    resource: str,
    itype: str,
    hours: float,
    effective: float,
    listed: float,
    *,
    category: str = "Committed",
    charge: str = "2026-11-02T00:00:00Z,2026-11-03T00:00:00Z",
    region: str = "us-east-1",
) -> str:
    details = '"{""InstanceType"":""' + itype + '""}"'
    return (
        f"{NOV},{charge},Usage,Compute,AWS,123456789012,{resource},{region},{category},{details},{hours},Hours,"
        f"{effective},{effective},{listed},USD"
    )


def bill_file(tmp_path: Path, *lines: str, name: str = "focus-2026-11.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([COLUMNS, *lines]) + "\n")
    return path


def rates(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = pl.from_arrow(read_focus(path))
    assert isinstance(frame, pl.DataFrame)
    return bill_rates(frame)


def test_resource_keys_match_provider_ids_to_bill_resource_ids() -> None:
    assert resource_key("aws:///us-east-1a/i-0abc1234def567890") == resource_key("i-0abc1234def567890")
    assert resource_key("arn:aws:ec2:us-east-1:123:instance/i-0abc1234def567890") == "aws:i-0abc1234def567890"
    assert resource_key("gce://proj/us-central1-a/gke-pool-1") == resource_key(
        "//compute.googleapis.com/projects/proj/zones/us-central1-a/instances/gke-pool-1"
    )
    vm = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1"
    assert resource_key("azure://" + vm) == resource_key(vm.lower())
    assert resource_key("") is None and resource_key(None) is None


def test_period_labels() -> None:
    utc = dt.UTC
    assert period_label(dt.datetime(2026, 11, 1, tzinfo=utc), dt.datetime(2026, 12, 1, tzinfo=utc)) == "2026-11"
    assert period_label(dt.datetime(2026, 12, 1, tzinfo=utc), dt.datetime(2027, 1, 1, tzinfo=utc)) == "2026-12"
    assert (
        period_label(dt.datetime(2026, 11, 1, tzinfo=utc), dt.datetime(2026, 11, 15, tzinfo=utc))
        == "2026-11-01..2026-11-15"
    )


def test_nodes_are_priced_at_their_effective_cost_per_hour_from_the_bill(tmp_path: Path) -> None:
    # i-0aaa...: 24 h of p5.48xlarge under a Savings Plan, 40.00/h effective against the 55.04 list price, in two
    # lines: 12 h x 40.00 + 12 h x 40.00 = 960.00 / 24 h = 40.00 USD/node-hour.
    # i-0bbb...: another p5.48xlarge, 24 h at 44.00 -> the instance-type rate is (960 + 1056) / 48 h = 42.00.
    # A spot p5.48xlarge line (Dynamic) is kept apart: 10 h for 180.00 -> 18.00 USD/node-hour for spot nodes.
    path = bill_file(
        tmp_path,
        line("i-0aaa1111aaaa11110", "p5.48xlarge", 12, 480.0, 660.48),
        line(
            "i-0aaa1111aaaa11110", "p5.48xlarge", 12, 480.0, 660.48, charge="2026-11-03T00:00:00Z,2026-11-04T00:00:00Z"
        ),
        line("i-0bbb2222bbbb22220", "p5.48xlarge", 24, 1056.0, 1320.96),
        line("i-0ccc3333cccc33330", "p5.48xlarge", 10, 180.0, 550.4, category="Dynamic"),
    )
    frame = nodes(
        {
            "node": "own",
            "provider_id": "aws:///us-east-1a/i-0aaa1111aaaa11110",
            "instance_type": "p5.48xlarge",
            "gpu_model": H100,
            "gpu_count": 8,
        },
        {
            "node": "same-type",
            "provider_id": "aws:///us-east-1b/i-0ddd4444dddd44440",
            "instance_type": "p5.48xlarge",
            "gpu_model": H100,
            "gpu_count": 8,
        },
        {"node": "spot", "instance_type": "p5.48xlarge", "capacity_type": "spot", "gpu_model": H100, "gpu_count": 8},
        {
            "node": "other-region",
            "instance_type": "p5.48xlarge",
            "region": "us-west-2",
            "gpu_model": H100,
            "gpu_count": 8,
        },
        {
            "node": "next-month",
            "date": dt.date(2026, 12, 1),
            "provider_id": "aws:///us-east-1a/i-0aaa1111aaaa11110",
            "instance_type": "p5.48xlarge",
            "gpu_model": H100,
            "gpu_count": 8,
        },
    )
    got = price_nodes(frame, CATALOG, rates(path)).select(
        "node", "usd_per_node_hour", "usd_per_gpu_hour", "price_source"
    )
    prefix = "bill (FOCUS, focus-2026-11.csv, 2026-11): "
    assert got.rows() == [
        ("own", pytest.approx(40.0), pytest.approx(5.0), prefix + "resource i-0aaa1111aaaa11110"),
        (
            "same-type",
            pytest.approx(42.0),
            pytest.approx(5.25),
            prefix + "mean effective cost of p5.48xlarge on-demand in us-east-1 (2 resources)",
        ),
        (
            "spot",
            pytest.approx(18.0),
            pytest.approx(2.25),
            prefix + "mean effective cost of p5.48xlarge spot in us-east-1 (1 resource)",
        ),
        # the bill covers neither us-west-2 nor December: list prices stay the fallback
        (
            "other-region",
            pytest.approx(55.04),
            pytest.approx(6.88),
            AWS_OD + "; region us-west-2 has no shipped price, us-east-1 price used",
        ),
        ("next-month", pytest.approx(55.04), pytest.approx(6.88), AWS_OD),
    ]


def test_lines_billed_in_another_currency_are_not_used(tmp_path: Path) -> None:
    path = bill_file(tmp_path, line("i-0aaa1111aaaa11110", "p5.48xlarge", 10, 300.0, 550.4).replace(",USD", ",EUR"))
    by_resource, by_type = rates(path)
    assert by_resource.height == 0 and by_type.height == 0


def test_the_reports_dollars_follow_the_bill(tmp_path: Path, cli: Callable[..., Result]) -> None:
    warehouse = tmp_path / "wh"
    made = cli("simulate", "--warehouse", str(warehouse), "--gpus", "16", "--days", "1", "--end", "2026-11-03")
    assert made.exit_code == 0, made.output
    lake = Lake(warehouse)
    stored = lake.scan(NODES).collect()
    p5 = stored.filter(pl.col("instance_type") == "p5.48xlarge").row(0, named=True)
    instance = p5["provider_id"].rsplit("/", 1)[1]
    # the p5.48xlarge by its own resource at 40.00 USD/node-hour (list: 55.04); every g6.12xlarge by its instance
    # type at 3.00 (list: 4.6016). The spot g5.12xlarge is not on the bill: its estimate from list prices stays.
    path = bill_file(
        tmp_path,
        line(instance, "p5.48xlarge", 24, 960.0, 1320.96),
        line("i-0eee5555eeee55550", "g6.12xlarge", 48, 144.0, 220.88),
    )
    imported = cli("import-bill", str(path), "--warehouse", str(warehouse))
    assert imported.exit_code == 0, imported.output
    result = cli(
        "report", "--warehouse", str(warehouse), "--start", "2026-11-02", "--end", "2026-11-03", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    hours = dict(
        lake.scan(NODES)
        .collect()
        .select("node", "instance_type")
        .join(pl.from_dicts(report["utilization"]["by_node"]).select("node", "gpu_hours"), on="node")
        .group_by("instance_type")
        .agg(pl.col("gpu_hours").sum())
        .iter_rows()
    )
    sources = {s["price_source"]: s for s in report["fleet"]["price_sources"]}
    prefix = "bill (FOCUS, focus-2026-11.csv, 2026-11): "
    own = sources[prefix + f"resource {instance}"]
    typed = sources[prefix + "mean effective cost of g6.12xlarge on-demand in us-east-1 (1 resource)"]
    assert own["cost_usd"] == pytest.approx(hours["p5.48xlarge"] * 40.0 / 8, abs=0.01)  # 5.00 per GPU-hour
    assert typed["cost_usd"] == pytest.approx(hours["g6.12xlarge"] * 3.0 / 4, abs=0.01)  # 0.75 per GPU-hour
    assert not own["price_fallback"] and not typed["price_fallback"]
    assert any(s.startswith("AWS spot estimate") for s in sources)  # the g5.12xlarge: list prices stay the fallback
