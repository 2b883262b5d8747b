"""The deploy files as data, and what the code says they must agree with.

The checks read the files statically (no Docker engine, no cluster, no network): the schemas they
validate against ship inside installed wheels (kubernetes-validate, check-jsonschema) or beside
these tests.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from streams.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "segstream.json"

ROLES = ("process", "sync", "api")
"""The `segstream` commands a deployment runs, one Deployment or compose service each."""

_VARIABLE = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+\b")


def settings_variables() -> set[str]:
    """Every environment variable `Settings` reads (`SEGSTREAM_<FIELD>`)."""
    return {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def secret_variables() -> set[str]:
    """The variables whose values are secrets (`SecretStr` fields), plus the Redis URL, which
    may carry a password."""
    secret = {ENV_PREFIX + name.upper() for name, field in Settings.model_fields.items()
              if "SecretStr" in str(field.annotation)}
    return secret | {ENV_PREFIX + "REDIS_URL"}


def variables_named_in(text: str) -> set[str]:
    """Every `SEGSTREAM_*` name in `text`, comments included (a commented option must work when
    someone uncomments it)."""
    return set(_VARIABLE.findall(text))


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as file:
        version: str = tomllib.load(file)["project"]["version"]
    return version


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_resources() -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, index in the file, document) of every Kubernetes object under deploy/k8s."""
    for path in k8s_files():
        for index, doc in enumerate(yaml_documents(path)):
            if doc.get("kind") != "Kustomization":
                yield path, index, doc


def image_tag(image: str) -> str | None:
    """The tag of `name[:tag][@digest]` (None: untagged), or the digest when pinned by one."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def pinned(image: str) -> bool:
    """Tagged with a version (not `latest`, not untagged) or pinned by digest."""
    tag = image_tag(image)
    return tag is not None and tag != "latest" and (
        tag.startswith("sha256:") or any(ch.isdigit() for ch in tag))


@contextlib.contextmanager
def health_server(answering: str) -> Iterator[int]:
    """A local HTTP server on a free port answering 200 at `answering` and 503 elsewhere, as a
    role answers its health routes; yields its port."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == answering else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join()


def health_check_passes(argv: list[str], port: int) -> bool:
    """Run a container health check command here (`python` is this interpreter) with the role's
    HTTP port in its environment; whether it exits 0."""
    argv = [sys.executable if word == "python" else word for word in argv]
    env = {**os.environ, ENV_PREFIX + "HTTP_PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
