"""`segstream up` keeps its embedded services running: one that dies is restarted, the roles
ride through, and what Redis held comes back from its append-only file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.streams.test_cli import _free_port, _kind, _wait_ready

TOKEN = "supervision-token-0123456789"


def _order(customer_id: str) -> dict[str, Any]:
    return {"event_id": f"{customer_id}-o1", "type": "order.placed",
            "occurred_at": "2026-11-28T12:00:00Z", "customer_id": customer_id,
            "data": {"order_id": f"{customer_id}-o1", "total": 400}}


def _stored(http: httpx.Client, customer_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = http.get(f"/customers/{customer_id}")
        except httpx.HTTPError:
            answer = None
        if answer is not None and answer.status_code == 200:
            body: dict[str, Any] = answer.json()
            return body
        time.sleep(0.2)
    raise AssertionError(f"{customer_id} never stored")


@pytest.mark.slow
def test_up_restarts_a_redis_that_died_and_the_roles_ride_through(tmp_path: Path) -> None:
    port = _free_port()
    segments = tmp_path / "segments.json"
    segments.write_text(json.dumps([{"id": "vip", "name": "VIP", "groups": [
        {"conditions": [{"field": "total_spent", "op": "gt", "value": 300}]}]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env |= {"SEGSTREAM_HTTP_PORT": str(port), "SEGSTREAM_PARTITIONS": "2",
            "SEGSTREAM_API_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "up", "--segments", str(segments)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait_ready(port)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            assert http.post("/events", json=_order("c-before")).status_code == 202
            assert _stored(http, "c-before")["segments"] == ["vip"]
            [valkey] = [c for c in psutil.Process(proc.pid).children(recursive=True)
                        if _kind(c) == "valkey"]
            valkey.send_signal(signal.SIGKILL)
            valkey.wait(10)
            time.sleep(2)
            assert proc.poll() is None, "segstream up exited when its Redis died"
            _wait_ready(port)  # restarted, and the roles back
            assert http.post("/events", json=_order("c-after")).status_code == 202
            assert _stored(http, "c-after")["segments"] == ["vip"]
            assert _stored(http, "c-before")["segments"] == ["vip"]
            vip = http.get("/segments/vip").json()
            assert vip["member_count"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, output
    assert "embedded valkey exited" in output and "embedded valkey is back" in output, output
    assert "stopped cleanly" in output
