"""What operators get: the metrics catalogue (docs/metrics.md) matches what the daemon exports,
the Prometheus alert rules pass `promtool check rules` and their unit tests (with a negative
control), and every query of the Grafana dashboard is valid PromQL over exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient

from tests.daemon import ROOT

CATALOGUE = ROOT / "docs" / "metrics.md"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "n8n-bridge.json"
METRIC = re.compile(r"\bbridge_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        raise RuntimeError("promtool is not installed: scripts/test.sh installs it (prometheus)")
    return binary


async def exported(client: TestClient) -> set[str]:
    """Metric family names the daemon exports (as written in PromQL: counters with _total)."""
    text = await (await client.get("/metrics")).text()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}


def referenced(text: str) -> set[str]:
    """Metric families named in PromQL text (a histogram's series name its family)."""
    names = set()
    for name in METRIC.findall(text):
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


embedded_only = pytest.mark.parametrize("backend", ["embedded"])  # the app's /metrics, once


@embedded_only
async def test_the_catalogue_lists_every_exported_metric_and_no_other(client: TestClient) -> None:
    rows = re.findall(r"^\| `(bridge_[a-z_]+)` \|", CATALOGUE.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(await exported(client))


@embedded_only
async def test_alerts_and_dashboard_use_only_exported_metrics(client: TestClient) -> None:
    metrics = await exported(client)
    dashboard = DASHBOARD.read_text()
    assert referenced(RULES.read_text()) <= metrics
    assert referenced(dashboard) <= metrics
    # The dashboard covers what operators asked for.
    rows = [p["title"] for p in json.loads(dashboard)["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Queues", "Callbacks and event webhooks", "Blue vs green"]


def test_the_alert_rules_pass_promtool() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    tested_alerts = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts == tested_alerts  # every rule has its unit test


def test_the_rule_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """Negative control: with the error-rate threshold raised to 50 %, the unit test that
    expects the 10 % instance to alert must fail."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert tested.returncode != 0
    assert "BridgeHighErrorRate" in tested.stdout + tested.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, as a recording rule, through promtool's PromQL parser."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [t["expr"] for p in panels for t in p.get("targets", ())]
    assert len(queries) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": q.replace("$__rate_interval", "5m")}
                    for n, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
