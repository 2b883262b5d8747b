"""The one way segstream opens a Redis client: redis-py's, with writes that cannot lose a cancel.

redis-py bounds each write by `socket_timeout` (5 s by default since redis-py 8) with
`asyncio.wait_for`. On Python 3.11, `wait_for` returns the write's result when a cancellation
arrives just as the write completes, and the cancellation is lost. Writes to a local server
complete at once, so a task cancelled while it talks to Redis would often run on (a demo or a
processor that does not stop; docs/design.md, "Shutdown and cancellation"). The connections
made here bound the same write with `asyncio.timeout`, which keeps the cancellation, and raise
redis-py's own `TimeoutError` when the write takes too long, as redis-py does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.exceptions import TimeoutError as RedisTimeoutError


class _BoundedWrites(AbstractConnection):
    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        limit = self.socket_timeout
        if not limit:
            return await super().send_packed_command(command, check_health)
        self.socket_timeout = None  # redis-py would wrap the write in wait_for
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)
        except TimeoutError:  # redis-py has disconnected on the cancel the timeout sent
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


class _TcpConnection(_BoundedWrites, Connection):
    pass


class _SslConnection(_BoundedWrites, SSLConnection):
    pass


class _UnixConnection(_BoundedWrites, UnixDomainSocketConnection):
    pass


_BOUNDED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _TcpConnection,
    SSLConnection: _SslConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def connect_redis(url: str, **options: Any) -> Redis:
    """A client for `url` (redis://, rediss:// or unix://); `options` go to redis-py's pool.

    As with `Redis.from_url`, the URL's own options win over `options`.
    """
    from_url: dict[str, Any] = dict(parse_url(url))
    chosen = from_url.get("connection_class", options.get("connection_class", Connection))
    pool = ConnectionPool(**{
        "decode_responses": False, **options, **from_url,
        "connection_class": _BOUNDED.get(chosen, chosen),
    })
    return Redis.from_pool(pool)


@contextlib.asynccontextmanager
async def redis_client(url: str, **options: Any) -> AsyncIterator[Redis]:
    """`connect_redis`, closed (with its pool) on the way out."""
    client = connect_redis(url, **options)
    try:
        yield client
    finally:
        await client.aclose()
