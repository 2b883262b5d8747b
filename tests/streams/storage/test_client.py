"""segstream's Redis client: a cancelled task stops, and a write that cannot finish times out."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.storage.client import connect_redis, redis_client
from tests.conftest import TestServices


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
