"""Property-based run of every documented operation against `segstream api` in a subprocess:
no 5xx, and every error in the contract's shape. Deterministic and bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode

from streams.settings import Settings

TOKEN = "schemathesis-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def api_process(settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "SEGSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
           "SEGSTREAM_REDIS_URL": settings.redis_url or "",
           "SEGSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "SEGSTREAM_KEY_PREFIX": settings.key_prefix, "SEGSTREAM_API_TOKEN": TOKEN,
           "SEGSTREAM_SECRET_KEY": "k" * 44, "SEGSTREAM_HTTP_PORT": str(port),
           "SEGSTREAM_PARTITIONS": "2", "SEGSTREAM_RUN_DIR": str(tmp_path / "run")}
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "api"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_live(proc, url)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
        assert b"Traceback" not in output, output.decode()


def _wait_live(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"segstream api exited: {proc.stdout.read().decode()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("segstream api did not answer /health/live within 30 s")


def _check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert {"code", "message", "details"} <= set(body["error"]), body
        assert isinstance(body["error"]["code"], str) and body["error"]["message"]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_operation_answers_5xx_or_another_error_shape(api_process: str, mode: Any):
    schema_json = httpx.get(f"{api_process}/openapi.json", headers=AUTH).json()
    schema = schemathesis.openapi.from_dict(schema_json)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: list[int] = []
    for operation in operations:

        @hypothesis_settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None,
                             deadline=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=api_process, headers=AUTH, timeout=10)
            statuses.append(response.status_code)
            _check(response)

        run()
    assert len(statuses) >= 5 * len(operations)
    assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
