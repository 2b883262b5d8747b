"""The retry object and the limiters on their own (no HTTP)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from providers.base import BatchResult, MemberFailure, for_each_member, gather_or_raise
from providers.errors import (
    AuthError,
    ListNotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from providers.limits import (
    AC_BULK_IMPORT,
    AccountLimiter,
    LimitPolicy,
    ProviderLimits,
    SlidingWindowLimiter,
)
from providers.retry import FullJitterBackoff, Retry


class Recorder:
    """A fake ``sleep`` that records delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(*errors: ProviderError) -> tuple[list[int], object]:
    calls: list[int] = []
    queue = list(errors)

    async def attempt() -> str:
        calls.append(1)
        if queue:
            raise queue.pop(0)
        return "done"

    return calls, attempt


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    backoff = FullJitterBackoff(base=0.5, cap=4.0, rng=random.Random(1))
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        samples = [backoff.compute(failures) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # full jitter spreads over the whole range


async def test_retriable_errors_are_retried_until_success() -> None:
    sleep = Recorder()
    calls, attempt = failing(TransientError("503"), RateLimited(), TransientError("drop"))
    retry = Retry(FullJitterBackoff(base=0.1, cap=1), 5, sleep=sleep, on_retry=lambda *a: None)
    assert await retry.call_with_retry(attempt) == "done"  # type: ignore[arg-type]
    assert len(calls) == 4 and len(sleep.delays) == 3


async def test_retry_after_is_honoured_over_the_backoff() -> None:
    sleep = Recorder()
    _, attempt = failing(RateLimited(retry_after=7.0))
    retry = Retry(FullJitterBackoff(base=0.01, cap=0.01), 3, sleep=sleep, on_retry=lambda *a: None)
    await retry.call_with_retry(attempt)  # type: ignore[arg-type]
    assert 7.0 <= sleep.delays[0] <= 7.7


async def test_a_retry_after_too_long_to_hold_is_raised() -> None:
    _, attempt = failing(RateLimited(retry_after=600.0))
    retry = Retry(max_attempts=3, max_retry_after=60, sleep=Recorder())
    with pytest.raises(RateLimited):
        await retry.call_with_retry(attempt)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [PermanentError("Invalid Resource"), AuthError("bad key")])
async def test_non_retriable_errors_raise_at_once(error: ProviderError) -> None:
    calls, attempt = failing(error)
    with pytest.raises(type(error)):
        await Retry(max_attempts=5, sleep=Recorder()).call_with_retry(attempt)  # type: ignore[arg-type]
    assert len(calls) == 1


async def test_attempts_are_bounded() -> None:
    calls, attempt = failing(*[TransientError("503")] * 10)
    retry = Retry(max_attempts=4, sleep=Recorder(), on_retry=lambda *a: None)
    with pytest.raises(TransientError):
        await retry.call_with_retry(attempt)  # type: ignore[arg-type]
    assert len(calls) == 4


async def test_sliding_window_allows_n_per_period() -> None:
    window = SlidingWindowLimiter(5, 0.2)
    started = time.monotonic()
    stamps = []
    for _ in range(12):
        await window.acquire()
        stamps.append(time.monotonic() - started)
    assert stamps[4] < 0.05 and stamps[5] >= 0.19 and stamps[10] >= 0.39
    assert all(b - a >= 0.19 for a, b in zip(stamps, stamps[5:], strict=False))


async def test_concurrency_cap_holds_across_tasks() -> None:
    limiter = AccountLimiter(LimitPolicy(max_concurrent=3))
    active, peak = 0, 0

    async def work() -> None:
        nonlocal active, peak
        async with limiter.slot():
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(work() for _ in range(20)))
    assert peak == 3


async def test_pause_holds_new_calls() -> None:
    limiter = AccountLimiter(LimitPolicy())
    limiter.pause(0.15)
    started = time.monotonic()
    async with limiter.slot():
        pass
    assert time.monotonic() - started >= 0.14


def test_limiters_are_shared_per_account() -> None:
    limits = ProviderLimits()
    a = limits.for_account("activecampaign", "acct.api-us1.com")
    assert limits.for_account("activecampaign", "acct.api-us1.com") is a
    assert limits.for_account("activecampaign", "other.api-us1.com") is not a
    assert a.policy == LimitPolicy(max_calls=5, period=1.0, margin=0.1)
    assert limits.for_account("mailchimp", "k").policy.max_concurrent == 10
    assert limits.for_account("sendlane", "k").policy.max_calls == 240


def test_an_endpoint_limit_is_its_own_limiter_per_account() -> None:
    limits = ProviderLimits()
    bulk = limits.for_account(AC_BULK_IMPORT, "acct.api-us1.com")
    assert bulk is limits.for_account(AC_BULK_IMPORT, "acct.api-us1.com")
    assert bulk is not limits.for_account("activecampaign", "acct.api-us1.com")
    assert bulk is not limits.for_account(AC_BULK_IMPORT, "other.api-us1.com")
    assert (bulk.policy.max_calls, bulk.policy.period) == (100, 60.0)


async def test_for_each_member_records_member_errors_and_raises_account_errors() -> None:
    async def act(email: str) -> None:
        if email == "bad@x.test":
            raise PermanentError("Invalid Resource", "looks fake", status=400)
        if email == "slow@x.test":
            raise TransientError("Service Unavailable", status=503)

    result = await for_each_member(["ok@x.test", "bad@x.test", "slow@x.test"], act, concurrency=2)
    assert result.succeeded == ["ok@x.test"]
    assert result.permanent == {"bad@x.test": MemberFailure("Invalid Resource", "looks fake", 400)}
    assert list(result.retriable) == ["slow@x.test"]

    for fatal in (AuthError("API Key Invalid"), ListNotFound("Resource Not Found")):
        async def account_error(email: str, fatal: ProviderError = fatal) -> None:
            raise fatal

        with pytest.raises(type(fatal)):
            await for_each_member(["a@x.test"], account_error, concurrency=1)


def test_batch_result_merges() -> None:
    one = BatchResult(["a"], {"b": MemberFailure("x")})
    one.extend(BatchResult(["c"], {"d": MemberFailure("y", retriable=True)}))
    assert one.succeeded == ["a", "c"] and set(one.failed) == {"b", "d"} and not one.ok
    assert MemberFailure("T", "D").reason == "T: D" and MemberFailure("T").reason == "T"


async def test_gather_or_raise_cancels_the_rest_and_raises_the_error_itself() -> None:
    finished: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(5)
        finished.append("slow")
        return "slow"

    async def refused() -> str:
        raise AuthError("API Key Invalid")

    with pytest.raises(AuthError):
        await gather_or_raise([slow(), refused()])
    assert finished == []

    async def value(v: int) -> int:
        return v

    assert await gather_or_raise(value(i) for i in range(3)) == [0, 1, 2]
