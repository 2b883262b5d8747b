"""Retry as an object (after redis-py's ``Retry``): a backoff, a budget, a classification.

``Retry.call_with_retry`` runs an attempt until it succeeds, raises an error that
is not retriable, or the attempts run out. A ``RateLimited`` error carrying
``retry_after`` is waited out (plus a little jitter); other retriable errors wait
per the backoff, exponential with full jitter (AWS architecture blog, "Exponential
Backoff And Jitter"): ``uniform(0, min(cap, base * 2**(failures-1)))``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from providers.errors import ProviderError, RateLimited, TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[ProviderError, int, float], None]


class Backoff(Protocol):
    """How long to wait after the ``failures``-th consecutive failure."""

    def compute(self, failures: int) -> float: ...


@dataclass(frozen=True)
class FullJitterBackoff:
    """Exponential backoff with full jitter, capped."""

    base: float = 0.25
    cap: float = 20.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def compute(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(failures - 1, 0))
        return self.rng.uniform(0, ceiling)


@dataclass(frozen=True)
class NoBackoff:
    """Retry at once (tests)."""

    def compute(self, failures: int) -> float:
        return 0.0


def _log_retry(error: ProviderError, failures: int, delay: float) -> None:
    # DEBUG: one line per attempt; what a run of failures means is logged by the caller once
    log.debug("retrying after %s (failure %d, waiting %.2fs)", error, failures, delay)


class Retry:
    """Retry policy: ``max_attempts`` tries in all, waiting per ``backoff`` in between.

    ``supported_errors`` lists the classes worth retrying; an instance must also say
    ``retriable``. A ``retry_after`` above ``max_retry_after`` is not waited for: the
    error is raised so the caller can reschedule instead of holding a task.
    """

    def __init__(
        self,
        backoff: Backoff | None = None,
        max_attempts: int = 6,
        *,
        supported_errors: tuple[type[ProviderError], ...] = (RateLimited, TransientError),
        max_retry_after: float = 120.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: OnRetry = _log_retry,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.backoff: Backoff = backoff if backoff is not None else FullJitterBackoff()
        self.max_attempts = max_attempts
        self.supported_errors = supported_errors
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._on_retry = on_retry
        self._rng = random.Random()

    def is_retriable(self, error: ProviderError) -> bool:
        """Whether this error class is one this policy retries."""
        return error.retriable and isinstance(error, self.supported_errors)

    def delay_for(self, error: ProviderError, failures: int) -> float | None:
        """Seconds to wait before the next try, or None to give up now."""
        if failures >= self.max_attempts or not self.is_retriable(error):
            return None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            # A little jitter so tasks released by the same Retry-After do not collide.
            return error.retry_after + self._rng.uniform(0, 0.1 * error.retry_after)
        return self.backoff.compute(failures)

    async def call_with_retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds or an error may not be retried."""
        failures = 0
        while True:
            try:
                return await attempt()
            except ProviderError as error:
                failures += 1
                delay = self.delay_for(error, failures)
                if delay is None:
                    raise
                self._on_retry(error, failures, delay)
                await self._sleep(delay)
