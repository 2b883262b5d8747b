"""deploy/k8s: every object valid against the Kubernetes schemas (offline, bundled in
kubernetes-validate) or, for KEDA's ScaledObject, against tests/deploy's schema; and what the
schemas cannot see: the settings exist, probes reach the health routes, images are pinned, every
container runs unprivileged, and KEDA never scales a group past its partitions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from streams.broker.topics import TopicNames
from streams.cli import _parser
from tests.deploy.files import (
    K8S,
    ROLES,
    k8s_files,
    k8s_resources,
    pinned,
    project_version,
    secret_variables,
    settings_variables,
    variables_named_in,
    yaml_documents,
)

KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests are checked against (strict: unknown fields refused)."""

KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_scaledobject.schema.json").read_text())

RESOURCES = list(k8s_resources())


def _id(item: tuple[Path, int, dict[str, Any]]) -> str:
    path, index, doc = item
    return f"{path.name}#{index}:{doc.get('kind')}"


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, _, doc in RESOURCES if doc["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap", "segstream-config")["data"]
    return data


def _deployments() -> dict[str, dict[str, Any]]:
    """Deployments by the segstream command they run."""
    return {doc["spec"]["template"]["spec"]["containers"][0]["args"][0]: doc
            for doc in _of_kind("Deployment")}


def _validate(doc: dict[str, Any]) -> None:
    if doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, KEDA_SCHEMA)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("item", RESOURCES, ids=[_id(r) for r in RESOURCES])
def test_every_object_is_valid_against_its_schema(item: tuple[Path, int, dict[str, Any]]) -> None:
    _validate(item[2])


def test_the_schema_check_refuses_a_broken_object() -> None:
    """The validators run offline and do refuse: an unknown field, a wrong type, a KEDA metadata
    value that is not a string (KEDA takes strings only)."""
    deployment = copy.deepcopy(_deployments()["process"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    deployment = copy.deepcopy(_deployments()["process"])
    deployment["spec"]["revisionHistoryLimit"] = "five"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    scaled = copy.deepcopy(_one("ScaledObject", "segstream-processor"))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 30000
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = yaml_documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in k8s_files()} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    (image,) = kustomization["images"]
    assert image["name"] == "segstream" and image["newTag"] == project_version()


def test_every_segstream_variable_named_is_a_setting() -> None:
    known = settings_variables()
    for path in k8s_files():
        unknown = variables_named_in(path.read_text()) - known
        assert not unknown, f"{path.name} names variables Settings does not read: {unknown}"


def test_secrets_are_in_the_secret_and_settings_in_the_config_map() -> None:
    config = set(_config())
    secret = set(_one("Secret", "segstream-secrets")["stringData"])
    assert config | secret <= settings_variables()
    assert not config & secret_variables(), "a secret in the ConfigMap"
    assert secret_variables() <= secret, "a secret setting with no place in the Secret"
    assert {"SEGSTREAM_API_TOKEN", "SEGSTREAM_SECRET_KEY", "SEGSTREAM_REDIS_URL"} <= secret


def test_a_deployment_per_role_reading_the_config_and_the_secret() -> None:
    deployments = _deployments()
    assert set(deployments) == set(ROLES)
    for role, doc in deployments.items():
        _parser().parse_args([role])  # a command `segstream` knows
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources == {"configMapRef": "segstream-config", "secretRef": "segstream-secrets"}
        assert not {e["name"] for e in container.get("env", [])} - settings_variables()


def test_probes_hit_the_health_routes_on_the_http_port() -> None:
    port = int(_config()["SEGSTREAM_HTTP_PORT"])
    for role, doc in _deployments().items():
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"),
                            ("startupProbe", "/health/live")):
            get = container[probe]["httpGet"]
            assert get["path"] == path, (role, probe)
            assert ports.get(get["port"], get["port"]) == port, (role, probe)
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"


def test_images_are_pinned_to_a_version() -> None:
    for role, doc in _deployments().items():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert pinned(container["image"]), (role, container["image"])
            assert container["image"] == f"segstream:{project_version()}"


def test_every_container_runs_unprivileged_on_a_read_only_root() -> None:
    config = _config()
    for role, doc in _deployments().items():
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, role
        assert pod["securityContext"]["runAsUser"] != 0, role
        assert pod["automountServiceAccountToken"] is False, role
        mounts = {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, role
            assert context["readOnlyRootFilesystem"] is True, role
            assert context["capabilities"]["drop"] == ["ALL"], role
            assert "add" not in context["capabilities"], role
        # what a role writes (its run folder) is on a writable volume
        assert any(config["SEGSTREAM_RUN_DIR"].startswith(m.rstrip("/") + "/") for m in mounts)


def test_every_container_has_requests_and_limits() -> None:
    for role, doc in _deployments().items():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (role, kind)


def test_services_and_budgets_select_a_role() -> None:
    labels = [doc["spec"]["template"]["metadata"]["labels"] for doc in _deployments().values()]

    def selects_a_role(selector: dict[str, str]) -> bool:
        return sum(selector.items() <= pod.items() for pod in labels) == 1

    for service in _of_kind("Service"):
        assert selects_a_role(service["spec"]["selector"]), service["metadata"]["name"]
    budgets = _of_kind("PodDisruptionBudget")
    for budget in budgets:
        assert selects_a_role(budget["spec"]["selector"]["matchLabels"])
    assert len(budgets) == len(ROLES)
    api = _one("Service", "segstream-api")
    assert api["spec"]["ports"][0]["targetPort"] == "http"


def test_keda_scales_each_group_on_its_own_topics_up_to_the_partition_count() -> None:
    config = _config()
    partitions = int(config["SEGSTREAM_PARTITIONS"])
    topics = TopicNames(config.get("SEGSTREAM_TOPIC_PREFIX", ""))
    group = config["SEGSTREAM_GROUP_ID"]
    deployments = {doc["metadata"]["name"]: (role, doc) for role, doc in _deployments().items()}
    expected = {"process": (group, set(topics.co_partitioned)),
                "sync": (f"{group}-sync", {topics.membership})}
    scaled_roles = set()
    for scaled in _of_kind("ScaledObject"):
        spec = scaled["spec"]
        role, deployment = deployments[spec["scaleTargetRef"]["name"]]
        scaled_roles.add(role)
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        consumer_group, wanted_topics = expected[role]
        triggers = [t["metadata"] for t in spec["triggers"]]
        assert {t["consumerGroup"] for t in triggers} == {consumer_group}
        assert {t["topic"] for t in triggers} == wanted_topics
        assert {t["bootstrapServers"] for t in triggers} == {config["SEGSTREAM_KAFKA_BOOTSTRAP"]}
    assert scaled_roles == {"process", "sync"}
    hpa = _one("HorizontalPodAutoscaler", "segstream-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == _deployments()["api"]["metadata"]["name"]
