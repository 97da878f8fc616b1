"""The Prometheus alert rules (deploy/prometheus/gpuledger-rules.yaml): valid for promtool, unit-tested with
``promtool test rules`` (each alert fires, and stays quiet before its time), and shipped unchanged as a
PrometheusRule for the Prometheus Operator."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus_server import INSTALL_HINT
from tests.test_grafana import CONTRACT

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "gpuledger-rules.yaml"
UNIT_TESTS = ROOT / "deploy" / "prometheus" / "gpuledger-rules.test.yaml"
OPERATOR = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
README = ROOT / "README.md"
ALERTS = {
    "GpuledgerIdleGpus",
    "GpuledgerNodeSilent",
    "GpuledgerPriceFallback",
    "GpuledgerGpusNotReporting",
    "GpuledgerScrapeStalled",
    "GpuledgerMetricsStale",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(INSTALL_HINT)
    return found


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_promtool_checks_the_rules() -> None:
    done = run("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = run("test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_each_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    assert {r["alert"] for r in rules()} == ALERTS
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{alert} is never tested quiet"


def test_rules_read_only_the_served_metric_names() -> None:
    for rule in rules():
        names = set(re.findall(r"\bgpuledger_[a-z_]+\b", rule["expr"]))
        assert names and names <= CONTRACT, (rule["alert"], names - CONTRACT)


def test_each_alert_says_what_and_where_to_look() -> None:
    anchor = "#grafana-and-alert-rules"
    assert "### Grafana and alert rules" in README.read_text()
    for rule in rules():
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert "$labels" in notes["summary"] + notes["description"], rule["alert"]
        assert "$value" in notes["summary"] + notes["description"], rule["alert"]
        assert notes["runbook_url"] == f"README.md{anchor}", rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]


def test_prometheusrule_holds_the_same_groups(tmp_path: Path) -> None:
    operator = yaml.safe_load(OPERATOR.read_text())
    assert operator["apiVersion"] == "monitoring.coreos.com/v1" and operator["kind"] == "PrometheusRule"
    assert operator["metadata"]["namespace"] == "gpuledger"
    assert {"release", "role"} <= set(operator["metadata"]["labels"])
    assert operator["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    copy = tmp_path / "from-prometheusrule.yaml"
    copy.write_text(yaml.safe_dump({"groups": operator["spec"]["groups"]}))
    done = run("check", "rules", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
