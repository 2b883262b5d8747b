"""Client-side limiters, one per provider account, shared by every task using it.

Providers count their limits per account, not per connection or task: Mailchimp
allows 10 simultaneous connections per user, ActiveCampaign 5 requests a second per
account (all keys together), Sendlane 240 calls a minute. ``ProviderLimits`` hands
out one ``AccountLimiter`` per ``(provider, account)``, so a worker that builds all its
clients with the same ``ProviderLimits`` stays under the limit however many tasks it
runs. Create it inside the running event loop that uses it (asyncio primitives).

A 429 with ``Retry-After`` pauses the whole account (``AccountLimiter.pause``), not
just the task that got it.

An endpoint with a limit of its own gets a policy of its own, keyed
``<provider>.<endpoint>`` and looked up per account like the provider's:
ActiveCampaign's bulk import (100 calls a minute for calls of several contacts,
documented apart from the 5 a second) is ``activecampaign.bulk_import``. Such a call
takes the endpoint's permit first and the account's after it, so a call waiting
for its endpoint's window holds none of the account's permits, and a ``Retry-After``
on it pauses that endpoint only (``ApiSession.call(also=...)``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from providers.observe import NO_OBSERVER, WAIT_REPORTED_S, CallObserver

Clock = Callable[[], float]


@dataclass(frozen=True)
class LimitPolicy:
    """A provider's limit: at most ``max_concurrent`` in flight and ``max_calls`` per ``period``.

    ``margin`` widens the window so that calls sent at the edge of it, delayed
    differently on the way, still reach the provider inside its limit.
    """

    max_concurrent: int | None = None
    max_calls: int | None = None
    period: float = 1.0
    margin: float = 0.0


AC_BULK_IMPORT = "activecampaign.bulk_import"

DEFAULT_POLICIES: Mapping[str, LimitPolicy] = {
    "mailchimp": LimitPolicy(max_concurrent=10),
    "activecampaign": LimitPolicy(max_calls=5, period=1.0, margin=0.1),
    # Calls of several contacts; the client never sends a one-contact import (20/min).
    AC_BULK_IMPORT: LimitPolicy(max_calls=100, period=60.0, margin=1.0),
    "sendlane": LimitPolicy(max_calls=240, period=60.0, margin=1.0),
}


async def _sleep_until_zero(remaining: Callable[[], float]) -> None:
    """Sleep until ``remaining()`` (seconds left, recomputed after each sleep) is <= 0."""
    while True:
        wait = remaining()
        if wait <= 0:
            return
        await asyncio.sleep(wait)


class SlidingWindowLimiter:
    """At most ``max_calls`` acquisitions in any window of ``period`` seconds (FIFO)."""

    def __init__(self, max_calls: int, period: float, clock: Clock = time.monotonic) -> None:
        if max_calls < 1 or period <= 0:
            raise ValueError("max_calls must be >= 1 and period > 0")
        self.max_calls = max_calls
        self.period = period
        self._clock = clock
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a call fits in the window, then count it."""
        async with self._lock:
            await _sleep_until_zero(self._wait_needed)
            self._stamps.append(self._clock())

    def _wait_needed(self) -> float:
        now = self._clock()
        while self._stamps and now - self._stamps[0] >= self.period:
            self._stamps.popleft()
        if len(self._stamps) < self.max_calls:
            return 0.0
        return self._stamps[0] + self.period - now


class AccountLimiter:
    """Concurrency cap, call-rate window and pause for one provider account."""

    def __init__(
        self, policy: LimitPolicy, clock: Clock = time.monotonic, *, name: str = "",
        observer: CallObserver = NO_OBSERVER,
    ) -> None:
        self.policy = policy
        self.name = name
        """The limit's name in what the observer is told (``mailchimp``,
        ``activecampaign.bulk_import``)."""
        self.observer = observer
        """Told of the waits for a permit, and (by the sessions using this limiter) of each
        call."""
        self._clock = clock
        self._resume_at = 0.0
        self._in_flight = asyncio.Semaphore(policy.max_concurrent or 1)
        self._window = (
            SlidingWindowLimiter(policy.max_calls, policy.period + policy.margin, clock)
            if policy.max_calls
            else None
        )

    def pause(self, seconds: float) -> None:
        """Hold every new call on this account for ``seconds`` (the provider said so)."""
        self._resume_at = max(self._resume_at, self._clock() + seconds)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a permit for one request, from sending it to reading its answer."""
        asked = self._clock()
        await _sleep_until_zero(lambda: self._resume_at - self._clock())
        async with AsyncExitStack() as stack:
            if self.policy.max_concurrent:
                await stack.enter_async_context(self._in_flight)
            if self._window is not None:
                await self._window.acquire()
            waited = self._clock() - asked
            if waited >= WAIT_REPORTED_S:
                self.observer.limit_waited(self.name, waited)
            yield


class ProviderLimits:
    """Registry of account limiters: the same key always gets the same limiter."""

    def __init__(
        self,
        policies: Mapping[str, LimitPolicy] | None = None,
        clock: Clock = time.monotonic,
        observer: CallObserver = NO_OBSERVER,
    ) -> None:
        self.policies = {**DEFAULT_POLICIES, **(policies or {})}
        self.observer = observer
        """Given to every limiter, and through them to every session (``providers.observe``)."""
        self._clock = clock
        self._limiters: dict[tuple[str, str], AccountLimiter] = {}

    def for_account(self, provider: str, account_key: str) -> AccountLimiter:
        """The limiter for this account, created on first use."""
        key = (provider, account_key)
        limiter = self._limiters.get(key)
        if limiter is None:
            policy = self.policies.get(provider, LimitPolicy())
            limiter = self._limiters[key] = AccountLimiter(
                policy, self._clock, name=provider, observer=self.observer)
        return limiter
