"""The one way segstream opens a Redis client: redis-py's, with writes that cannot lose a cancel,
and with a retry policy that rides through outages.

A role's client (`patient_retry`) retries connection errors and timeouts for as long as Redis is
away, with capped exponential backoff and full jitter (redis-py's `Retry` and
`ExponentialWithJitterBackoff`), reporting the outage to `Outages` once, and its end once: the
role pauses and resumes by itself. Every write the runtime retries is safe to repeat (the commit
script is numbered: `StateStore.commit_many`). The API's client (`brief_retry`) gives up after a
few tries, so a request gets its 503 while Redis is away instead of hanging.

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
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ClusterError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams.ops.outages import Outages, describe

RETRY_BASE_S = 0.05
RETRY_CAP_S = 2.0
_RETRIED = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)


class ReportingRetry(Retry):
    """redis-py's `Retry`, telling `outages` when Redis stops and starts answering."""

    def __init__(self, retries: int, outages: Outages | None) -> None:
        super().__init__(ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S),
                         retries, supported_errors=_RETRIED)
        self._outages = outages

    def __deepcopy__(self, memo: dict[int, Any]) -> ReportingRetry:
        # redis-py copies the policy into every connection: the copies report to one monitor
        return ReportingRetry(self._retries, self._outages)

    async def call_with_retry(self, do: Any, fail: Any, is_retryable: Any = None,
                              with_failure_count: bool = False) -> Any:
        outages = self._outages
        if outages is None:
            return await super().call_with_retry(do, fail, is_retryable, with_failure_count)
        failed = False

        async def failing(error: Exception, *count: int) -> Any:
            nonlocal failed
            failed = True
            outages.down("redis", describe(error))
            return await fail(error, *count)

        result = await super().call_with_retry(do, failing, is_retryable, with_failure_count)
        if failed or outages.is_down("redis"):
            outages.up("redis")
        return result


FOREVER: Final = 1 << 40
"""Retries of a role's client: more than it can ever make at the backoff's cap (a negative
count, redis-py's "forever", makes a Redis Cluster client skip commands instead)."""


SLOT_MOVE_ERRORS: Final = (ClusterError, TryAgainError)
"""What a Redis Cluster answers while a slot migrates: `TRYAGAIN` (a multi-key command or a
WATCH whose keys are split between the two nodes for now), or redis-py's ClusterError once it
has followed its 16 redirections and the migration still runs. Both end with the migration."""


def through_slot_moves() -> Retry:
    """A retry that waits out a slot migration (up to about a minute), for writes that are safe
    to repeat: the numbered commit script, a WATCHed transaction run again from its reads."""
    return Retry(ExponentialWithJitterBackoff(base=RETRY_BASE_S, cap=RETRY_CAP_S), 40,
                 supported_errors=SLOT_MOVE_ERRORS)


async def no_cleanup(_: Exception) -> None:
    """`Retry.call_with_retry`'s failure handler, where there is nothing to clean up."""


def patient_retry(outages: Outages | None = None) -> dict[str, Any]:
    """Client options for a role: retry for as long as Redis is away."""
    return {"retry": ReportingRetry(FOREVER, outages)}


def brief_retry(outages: Outages | None = None) -> dict[str, Any]:
    """Client options for the API: a few tries, then the error (a 503)."""
    return {"retry": ReportingRetry(2, outages)}


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


def connect_redis(url: str, *, cluster: bool = False, **options: Any) -> Redis:
    """A client for `url` (redis://, rediss:// or unix://); `options` go to redis-py's pool.

    As with `Redis.from_url`, the URL's own options win over `options`. With `cluster`, a
    Redis Cluster client (`url` names any node; the others are discovered): every key a commit
    touches shares its partition's hash tag, so each commit stays within one slot.
    """
    if cluster:
        return _connect_cluster(url, **options)
    from_url: dict[str, Any] = dict(parse_url(url))
    chosen = from_url.get("connection_class", options.get("connection_class", Connection))
    pool = ConnectionPool(**{
        "decode_responses": False, **options, **from_url,
        "connection_class": _BOUNDED.get(chosen, chosen),
    })
    return Redis.from_pool(pool)


def _connect_cluster(url: str, **options: Any) -> Redis:
    # RedisCluster offers the commands and pipelines of Redis (it is typed apart)
    client: Any = RedisCluster.from_url(url, **{
        "decode_responses": False, **options,
        "connection_class": _SslConnection if url.startswith("rediss://") else _TcpConnection,
    })
    cluster_client: Redis = client
    return cluster_client


def shown_url(url: str) -> str:
    """`url` as it may be printed or logged: its password (if any) replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    netloc = f"{user}***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.asynccontextmanager
async def redis_client(url: str, *, cluster: bool = False, **options: Any
                       ) -> AsyncIterator[Redis]:
    """`connect_redis`, closed (with its pool) on the way out."""
    client = connect_redis(url, cluster=cluster, **options)
    try:
        yield client
    finally:
        await client.aclose()
