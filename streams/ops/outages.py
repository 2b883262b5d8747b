"""Which backing services are away right now, for readiness, metrics and one log line per change.

Roles do not exit because Redis or the broker is away: Redis calls are retried with capped
exponential backoff and jitter by redis-py's own `Retry` (`storage.client`), and a role that
fails on an outage is restarted by its supervisor (`streams.app`) after the same kind of backoff.
Both report here: `down` when a service fails (logged once, when it changes from up), `up` when a
call succeeds again (logged once, with how long it was away). `/health/ready` answers not-ready
with the reasons while anything is down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError
from redis.exceptions import ClusterError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("segstream.outages")


class Outages:
    """Per service ("redis", "kafka", ...): down since when, and why; up when absent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down: dict[str, tuple[float, str]] = {}
        self.counts: dict[str, int] = {}
        """Outages seen per service since the process started."""
        self.errors: dict[str, int] = {}
        """Failed calls seen per service (`failed`, and each `down`)."""

    def failed(self, service: str) -> None:
        """Count a failed call to `service` (an outage or not)."""
        self.errors[service] = self.errors.get(service, 0) + 1

    def down(self, service: str, reason: str) -> None:
        self.failed(service)
        if service in self._down:
            return
        self._down[service] = (self._clock(), reason)
        self.counts[service] = self.counts.get(service, 0) + 1
        log.warning("%s is unavailable (%s); waiting for it, retrying with backoff",
                    service, reason, extra={"service": service})

    def up(self, service: str) -> None:
        since = self._down.pop(service, None)
        if since is not None:
            log.info("%s is back after %.1f s", service, self._clock() - since[0],
                     extra={"service": service})

    def reasons(self) -> dict[str, str]:
        """The services down now, with why."""
        return {service: reason for service, (_, reason) in self._down.items()}

    def is_down(self, service: str) -> bool:
        return service in self._down


def service_of(error: BaseException) -> str | None:
    """The backing service whose absence `error` shows ("redis", "kafka"), or None when it is
    not an outage (a bug or bad configuration: those are not retried)."""
    if isinstance(error, RedisConnectionError | RedisTimeoutError | ClusterError | TryAgainError):
        return "redis"  # the last two: a Redis Cluster slot migration longer than its retries
    if isinstance(error, KafkaError):
        return "kafka"
    if isinstance(error, ConnectionError | TimeoutError):
        return "network"
    return None


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
