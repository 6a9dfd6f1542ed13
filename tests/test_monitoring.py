"""What operators get: the metrics catalogue (docs/metrics.md) matches what the daemon exports,
every series whose labels are known at start-up is there from start-up, the Prometheus alert
rules pass `promtool check rules` and their unit tests (with a negative control), the Grafana
dashboard has the panels the catalogue names, and each of its queries is valid PromQL over
exported metrics."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge import __version__
from bridge.keys import REGISTRY
from tests.conftest import ClientFactory
from tests.daemon import ROOT

CATALOGUE = ROOT / "docs" / "metrics.md"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "n8n-bridge.json"
METRIC = re.compile(r"\bbridge_[a-z_]+")
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")  # a metric name, then its matchers
PROMETHEUS_OWN = {"up"}  # series Prometheus itself writes for each scraped target
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


def family(name: str) -> str:
    """The metric family of a series name (a histogram's series name its family)."""
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def referenced(text: str) -> set[str]:
    """Metric families named in PromQL text."""
    return {family(name) for name in METRIC.findall(text)}


embedded_only = pytest.mark.parametrize("backend", ["embedded"])  # the app's /metrics, once


def catalogue_rows() -> dict[str, tuple[str, ...]]:
    """Each metric of the catalogue with its label names."""
    rows = re.findall(
        r"^\| `(bridge_[a-z_]+)` \| [^|]+ \| ([^|]+) \|", CATALOGUE.read_text(), re.MULTILINE
    )
    return {name: tuple(re.findall(r"`([a-z_]+)`", labels)) for name, labels in rows}


def series(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    """Every series of a scrape, by its family's name as PromQL writes it (counters with
    _total) and its labels (a histogram's `le` left out)."""
    found = set()
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        name += "_info" if family.type == "info" else ""
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if k != "le")
            found.add((name, labels))
    return found


def combinations(labels: dict[str, set[str]]) -> Iterator[frozenset[tuple[str, str]]]:
    names = sorted(labels)
    for values in itertools.product(*(sorted(labels[name]) for name in names)):
        yield frozenset(zip(names, values, strict=True))


# Series that appear as they happen, because a label's values are not known beforehand: the
# catalogue says so of each.
GROWN = {"bridge_http_requests_total": "status"}


@embedded_only
async def test_a_fresh_daemon_exports_every_series_whose_labels_are_known(
    make_client: ClientFactory,
) -> None:
    """A panel or an alert over a series that does not exist yet shows "No data", not 0: every
    processor, queue, route, mode, final status, outcome, kind and state has its series from
    start-up."""
    client = await make_client(queues=[{"name": "bulk"}, {"name": "mail", "overflow_to": "bulk"}])
    text = await (await client.get("/metrics")).text()
    processors = set(client.app[REGISTRY].names())
    queues = {"default", "bulk", "mail"}
    routes = {(r.resource.canonical, r.method) for r in client.app.router.routes() if r.resource}
    outcomes = {"ok", "error"}
    kinds = {"callback", "event"}
    attempts = {
        "delivered", "connection_error", "timeout", "server_error", "throttled", "not_ready",
        "finished", "rejected", "refused",
    }  # fmt: skip
    known: dict[str, Any] = {
        "bridge_build_info": {"version": {__version__}, "color": {""}},
        "bridge_http_request_duration_seconds": routes,
        "bridge_processor_duration_seconds": {"processor": processors, "outcome": outcomes},
        "bridge_processor_items_total": {"processor": processors, "outcome": outcomes},
        "bridge_jobs_total": {
            "processor": processors,
            "mode": {"sync", "async"},
            "status": {"completed", "failed", "cancelled"},
        },
        "bridge_jobs_rejected_total": {"queue": queues},
        "bridge_job_retries_total": {"processor": processors},
        "bridge_queue_depth": {"queue": queues},
        "bridge_queue_in_flight": {"queue": queues},
        "bridge_queue_oldest_wait_seconds": {"queue": queues},
        "bridge_queue_wait_seconds": {"queue": queues},
        "bridge_queue_run_seconds": {"queue": queues},
        "bridge_webhooks_total": {"kind": kinds, "outcome": {"delivered", "dead_letter"}},
        "bridge_webhook_attempts_total": {"kind": kinds, "outcome": attempts},
        "bridge_webhook_retries_total": {"kind": kinds},
        "bridge_thread_pool_overruns_total": {"outcome": {"abandoned", "kept"}},
        "bridge_backend_transitions_total": {"state": {"up", "down"}},
    }
    exported_series = series(text)
    missing: dict[str, int] = {}
    for name, labels in catalogue_rows().items():
        if not labels or name in GROWN:
            continue
        assert name in known, f"{name}: are its labels' values known at start-up?"
        wanted = known[name]
        if isinstance(wanted, set):  # route and method, together
            expected = {frozenset({("route", r), ("method", m)}) for r, m in wanted}
        else:
            assert set(wanted) == set(labels), name
            expected = set(combinations(wanted))
        lacking = {labels for labels in expected if (name, labels) not in exported_series}
        if lacking:
            missing[name] = len(lacking)
    assert missing == {}


def test_the_catalogue_names_the_series_that_grow() -> None:
    """The catalogue's sentence on series known at start-up names the exceptions."""
    text = CATALOGUE.read_text()
    sentence = next(s for s in re.split(r"(?<=\.)\s", text) if "from start-up at 0" in s)
    assert set(re.findall(r"`(bridge_[a-z_]+)`", sentence)) == set(GROWN)
    for name, label in GROWN.items():
        assert label in catalogue_rows()[name]


@embedded_only
async def test_the_catalogue_lists_every_exported_metric_and_no_other(client: TestClient) -> None:
    rows = re.findall(r"^\| `(bridge_[a-z_]+)` \|", CATALOGUE.read_text(), re.MULTILINE)
    assert sorted(rows) == sorted(await exported(client))


# the n8n node's resume-URL tag (n8n-nodes/README.md); a setting named in lower case, refused
# (docs/configuration.md)
NOT_METRICS = {"bridge_resume", "bridge_env"}


@embedded_only
async def test_every_metric_the_docs_name_is_exported_under_that_name(client: TestClient) -> None:
    """A metric named in README.md, docs/ or the nodes' README is one PromQL finds as written
    (counters with _total; a histogram by its name or a series of it)."""
    metrics = await exported(client)
    pages = [ROOT / "README.md", ROOT / "n8n-nodes" / "README.md", *(ROOT / "docs").glob("*.md")]
    wrong = {
        f"{page.relative_to(ROOT)}: {name}"
        for page in pages
        for name in METRIC.findall(page.read_text())
        if family(name) not in metrics and name not in NOT_METRICS
    }
    assert not wrong, sorted(wrong)


def dashboard_rows() -> dict[str, list[dict[str, Any]]]:
    """The dashboard's panels under each row, in order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            rows[panel["title"]] = []
        else:
            list(rows.values())[-1].append(panel)
    return rows


@embedded_only
async def test_alerts_and_dashboard_use_only_exported_metrics(client: TestClient) -> None:
    metrics = await exported(client)
    assert referenced(RULES.read_text()) <= metrics
    for panels in dashboard_rows().values():
        for panel in panels:
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                expr = target["expr"]
                assert referenced(expr) <= metrics, (panel["title"], expr)
                # Every selector names a series the bridge or Prometheus itself writes.
                selected = {family(name) for name in SELECTOR.findall(expr)}
                assert selected <= metrics | PROMETHEUS_OWN, (panel["title"], expr)


def test_the_dashboard_has_the_panels_the_catalogue_names() -> None:
    """docs/metrics.md lists each row's panels by title: the dashboard has those, and no other."""
    section = CATALOGUE.read_text().partition("## Dashboards and alerts")[2]
    named = {
        row: re.findall(r'"([^"]+)"', panels)
        for row, panels in re.findall(r"^\| (?!row |---)([^|]+?) \| ([^|]+) \|$", section, re.M)
    }
    shown = {row: [p["title"] for p in panels] for row, panels in dashboard_rows().items()}
    assert named == shown


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
