"""Prometheus and Grafana as docker-compose.yml provisions them: every role scraped, the alert
rules loaded, Grafana's data source and dashboard provider pointing where compose mounts the
files, and the dashboard referring to the data source that is provisioned.

The alert rules and the dashboard are written by the metrics work (which checks their queries
against /metrics); here only their wiring is checked, and skipped while a file does not exist."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy.files import ALERTS, COMPOSE, DASHBOARD, DEPLOY, ROLES, yaml_documents

PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"


def _compose_services() -> dict[str, Any]:
    (doc,) = yaml_documents(COMPOSE)
    services: dict[str, Any] = doc["services"]
    return services


def _mount_target(service: str, source: str) -> str:
    for volume in _compose_services()[service]["volumes"]:
        if volume.split(":")[0] == source:
            target: str = volume.split(":")[1]
            return target
    raise AssertionError(f"{service} does not mount {source}")


def _datasources() -> list[dict[str, Any]]:
    (doc,) = yaml_documents(PROVISIONING / "datasources" / "prometheus.yml")
    assert doc["apiVersion"] == 1
    sources: list[dict[str, Any]] = doc["datasources"]
    return sources


def test_prometheus_scrapes_every_role_and_loads_the_alert_rules() -> None:
    (config,) = yaml_documents(PROMETHEUS)
    assert config["rule_files"] == [_mount_target("prometheus", "./deploy/prometheus/alerts.yml")]
    assert _mount_target("prometheus", "./deploy/prometheus/prometheus.yml") == (
        "/etc/prometheus/prometheus.yml")
    services = _compose_services()
    scraped = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped[name] = (sd["port"], job.get("metrics_path", "/metrics"))
    for name, service in services.items():
        if service.get("command", [None])[0] in ROLES:
            port = int(service["environment"]["SEGSTREAM_HTTP_PORT"])
            assert scraped.get(name) == (port, "/metrics"), f"{name} is not scraped"


def test_grafana_data_source_and_dashboard_provider_match_the_compose_mounts() -> None:
    (source,) = _datasources()
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in _compose_services()
    (doc,) = yaml_documents(PROVISIONING / "dashboards" / "segstream.yml")
    (provider,) = doc["providers"]
    dashboard_at = _mount_target("grafana", "./deploy/grafana/segstream.json")
    assert provider["options"]["path"] == str(PurePosixPath(dashboard_at).parent)
    assert _mount_target("grafana", "./deploy/grafana/provisioning") == "/etc/grafana/provisioning"


def test_the_alert_rules_are_a_rule_file() -> None:
    if not ALERTS.exists():
        pytest.skip(f"{ALERTS.relative_to(DEPLOY.parent)} is not written yet (the metrics work)")
    (doc,) = yaml_documents(ALERTS)
    assert doc["groups"], "no rule groups"
    for group in doc["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule or "record" in rule) and rule["expr"]


def _datasource_refs(node: Any) -> list[Any]:
    """Every `datasource` value in the dashboard (panels, targets, annotations, variables)."""
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [ref for value in node.values() for ref in _datasource_refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _datasource_refs(value)]
    return []


def test_the_dashboard_uses_the_provisioned_data_source() -> None:
    if not DASHBOARD.exists():
        pytest.skip(f"{DASHBOARD.relative_to(DEPLOY.parent)} is not written yet (the metrics work)")
    dashboard = json.loads(DASHBOARD.read_text())
    # an exported dashboard's `__inputs` (${DS_...}) are filled by the import dialog only,
    # never by file provisioning
    assert "__inputs" not in dashboard
    (source,) = _datasources()
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])
                 if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    allowed_names = {f"${name}" for name in variables} | {f"${{{name}}}" for name in variables}
    for ref in _datasource_refs(dashboard):
        if ref is None or (isinstance(ref, dict) and ref.get("type") == "datasource"):
            continue  # the default data source, or Grafana's built-in annotations
        uid = ref.get("uid") if isinstance(ref, dict) else ref
        assert uid in {source["uid"], source["name"]} | allowed_names, ref
