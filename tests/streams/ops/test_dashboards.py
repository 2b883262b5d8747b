"""deploy/grafana/segstream.json and deploy/prometheus/alerts.yml: well formed, and every metric
they query is one that `/metrics` exposes.

What `/metrics` exposes is read from a registry wired as a role wires it (`Metrics` with every
source: engine stats, sync counters, outages, a lag reader on the session's broker, member
counts), family by family with the sample names each family's type gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.broker.topics import TopicNames
from streams.engine.stats import EngineStats
from streams.ops.lag import LagReader, groups_and_topics
from streams.ops.metrics import Metrics
from streams.ops.outages import Outages
from streams.settings import Settings
from streams.sync.worker import SyncCounters
from tests.streams.helpers import create_topics
from tests.streams.ops.promql import PromQLError, metric_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "segstream.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DATASOURCE_UID = "prometheus"
"""The uid of the data source deploy/grafana/provisioning gives Grafana."""

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                               "_created"),
             "gauge": ("",), "summary": ("_sum", "_count", "_created"), "info": ("_info",)}
_DURATION = re.compile(r"^\d+[smhdwy]$")
_ALERT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@pytest.fixture
async def exposed(settings: Settings) -> set[str]:
    """Every sample name the process's registry can expose."""
    await create_topics(settings)
    metrics = Metrics()
    metrics.watch_engine(EngineStats())
    metrics.watch_sync(SyncCounters())
    metrics.watch_outages(Outages())

    async def counts() -> dict[str, int]:
        return {"vip": 3}

    metrics.watch_members(counts)
    async with LagReader(settings.kafka_bootstrap or "", groups_and_topics(
            TopicNames(settings.topic_prefix), settings.group_id)) as reader:
        metrics.watch_lag(reader)
        text = (await metrics.render(within=30)).decode()
    assert "segstream_consumer_lag_records{" in text
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def _dashboard_exprs() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", ())]


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_every_metric_the_dashboard_and_alerts_query_is_exposed(exposed: set[str]) -> None:
    queried = {name: where for where, expr in [*_dashboard_exprs(),
                                                *((r["alert"], r["expr"]) for r in _rules())]
               for name in metric_names(expr)}
    missing = {name: where for name, where in queried.items() if name not in exposed}
    assert not missing, f"queried but not exposed: {missing}"
    assert not [n for n in exposed if n.endswith("_total_total")]


def test_every_family_has_help_and_follows_the_conventions(exposed: set[str]) -> None:
    metrics = Metrics(platform=False)
    for family in metrics.registry.collect():
        assert family.documentation.strip(), f"{family.name} has no HELP"
    assert all(n.startswith("segstream_") or n.startswith(("process_", "python_"))
               for n in exposed), sorted(exposed)
    histograms = [n for n in exposed if n.endswith("_bucket")]
    assert all(n.endswith(("_seconds_bucket", "_records_bucket")) for n in histograms)


def test_the_dashboard_is_a_grafana_dashboard_over_the_provisioned_prometheus() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "segstream" and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in board["panels"]}
    for wanted in ("Consumer lag (records)", "Time lag (oldest unprocessed record)",
                   "Events applied", "Event to membership record", "Dead letters",
                   "Provider calls", "Provider call latency", "Timers", "Timer lateness"):
        assert wanted in titles, wanted
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            metric_names(target["expr"])  # raises when malformed
    provisioned = ROOT / "deploy" / "grafana" / "provisioning" / "datasources"
    if provisioned.is_dir():
        uids = {source.get("uid") for path in provisioned.glob("*.y*ml")
                for source in yaml.safe_load(path.read_text()).get("datasources", ())}
        assert DATASOURCE_UID in uids


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    loaded = yaml.safe_load(ALERTS.read_text())
    assert set(loaded) == {"groups"}
    names = []
    for group in loaded["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule
            assert _ALERT_NAME.match(rule["alert"]), rule["alert"]
            names.append(rule["alert"])
            assert isinstance(rule["expr"], str) and metric_names(rule["expr"])
            assert _DURATION.match(str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert {"summary", "description"} <= set(rule["annotations"])
            for text in rule["annotations"].values():
                assert text.count("{{") == text.count("}}"), text
    assert len(names) == len(set(names))
    by_metric = {name: {n for r in _rules() if r["alert"] == name for n in metric_names(r["expr"])}
                 for name in names}
    wanted = {"segstream_consumer_lag_records", "segstream_consumer_time_lag_seconds",
              "segstream_dead_letters_total", "segstream_provider_calls_total",
              "segstream_timer_lateness_seconds_bucket"}
    assert wanted <= set().union(*by_metric.values())
    growing = next(r for r in _rules() if "segstream_consumer_lag_records" in r["expr"])
    assert growing["for"] == "5m" and "deriv(" in growing["expr"]


@pytest.mark.parametrize("expr", [
    "rate(segstream_x_total[5m]", "sum by (a (x)", "segstream_x{a=b}", "rat(segstream_x[5m])",
    "segstream_x[5 minutes]", "segstream_x segstream_y", "segstream_x >",
])
def test_the_checker_rejects_malformed_expressions(expr: str) -> None:
    with pytest.raises(PromQLError):
        metric_names(expr)
