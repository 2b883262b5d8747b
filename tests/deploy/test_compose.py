"""docker-compose.yml, checked statically (no Docker engine here): valid against the compose-spec
schema (vendored in check-jsonschema's wheel), images pinned, every SEGSTREAM_ variable one the
settings know, every service restarted and health-checked, Kafka in KRaft mode, Redis with AOF,
Prometheus and Grafana given their files."""

from __future__ import annotations

import copy
import json
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from streams.cli import _parser
from tests.deploy.files import (
    COMPOSE,
    REPO,
    ROLES,
    health_check_passes,
    health_server,
    pinned,
    project_version,
    settings_variables,
    variables_named_in,
    yaml_documents,
)

COMPOSE_SCHEMA = json.loads(
    files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())


def _compose() -> dict[str, Any]:
    (doc,) = yaml_documents(COMPOSE)  # PyYAML resolves the `<<` merges, as Compose does
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _roles() -> dict[str, dict[str, Any]]:
    """Services that run a segstream role, by command."""
    return {s["command"][0]: s for s in _services().values() if s.get("image", "").startswith(
        "segstream:")}


def _compose_validator() -> jsonschema.protocols.Validator:
    """The vendored schema names its draft as `https://json-schema.org/draft-07/schema`, which
    jsonschema does not recognise (it knows the `http://...#` form): pick the draft by name."""
    drafts = {"draft-07": jsonschema.Draft7Validator, "2020-12": jsonschema.Draft202012Validator}
    named = COMPOSE_SCHEMA.get("$schema", "")
    (draft,) = [cls for key, cls in drafts.items() if key in named]
    validator: jsonschema.protocols.Validator = draft(COMPOSE_SCHEMA)
    return validator


def test_the_file_is_valid_against_the_compose_spec() -> None:
    validator = _compose_validator()
    validator.validate(_compose())
    broken = copy.deepcopy(_compose())
    broken["services"]["redis"]["restart"] = ["always"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_every_image_is_pinned_to_a_version() -> None:
    for name, service in _services().items():
        assert pinned(service["image"]), (name, service["image"])
    for service in _roles().values():
        assert service["image"] == f"segstream:{project_version()}"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"


def test_every_segstream_variable_named_is_a_setting() -> None:
    unknown = variables_named_in(COMPOSE.read_text()) - settings_variables()
    assert not unknown, f"docker-compose.yml names variables Settings does not read: {unknown}"


def test_every_role_runs_restarted_health_checked_and_reachable() -> None:
    roles = _roles()
    assert set(roles) == set(ROLES)
    for role, service in roles.items():
        _parser().parse_args([role])
        env = service["environment"]
        assert env["SEGSTREAM_HTTP_HOST"] == "0.0.0.0", role  # scraped from other containers
        assert env["SEGSTREAM_HTTP_PORT"]
        assert service["healthcheck"]["test"][0] == "CMD"
        assert {"SEGSTREAM_KAFKA_BOOTSTRAP", "SEGSTREAM_REDIS_URL", "SEGSTREAM_API_TOKEN",
                "SEGSTREAM_SECRET_KEY"} <= set(env), role
        assert service["read_only"] is True and env["SEGSTREAM_RUN_DIR"].startswith("/tmp/")
        assert "/tmp" in service["tmpfs"]
        for needed in ("kafka", "redis"):
            assert service["depends_on"][needed]["condition"] == "service_healthy"
    for name, service in _services().items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name


def test_the_roles_health_check_asks_the_readiness_route_on_the_http_port() -> None:
    """Run here against a server that is ready, then one that is live but not ready."""
    for service in _roles().values():
        check = service["healthcheck"]["test"][1:]
        with health_server("/health/ready") as port:
            assert health_check_passes(check, port)
        with health_server("/health/live") as port:
            assert not health_check_passes(check, port)


def test_kafka_runs_in_kraft_mode_and_redis_with_aof() -> None:
    kafka = _services()["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in key for key in kafka)
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    command = " ".join(_services()["redis"]["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert {"kafka-data", "redis-data"} <= set(_compose()["volumes"])


def _mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to the repository)."""
    mounts = {}
    for volume in _services()[service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = source
    return mounts


def test_prometheus_and_grafana_get_their_config_rules_and_dashboard() -> None:
    prometheus = _mounts("prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert prometheus["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    grafana = _mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana["/etc/grafana/dashboards/segstream.json"] == "./deploy/grafana/segstream.json"
    written_here = {"./deploy/prometheus/prometheus.yml", "./deploy/grafana/provisioning"}
    for source in written_here:
        assert (REPO / source).exists(), source


@pytest.mark.parametrize("source", ["./deploy/prometheus/alerts.yml",
                                    "./deploy/grafana/segstream.json"])
def test_the_alert_rules_and_dashboard_mounted_exist(source: str) -> None:
    if not (REPO / source).exists():
        pytest.skip(f"{source} is not written yet (the metrics work adds it)")
    assert (REPO / source).stat().st_size > 0
