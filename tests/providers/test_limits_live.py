"""Client-side limiters against the fakes' real limits, over loopback HTTP.

With the limiter the provider's limit is never hit; without it the provider
throttles and the retry (honouring Retry-After where sent) still gets everything done.
"""

from __future__ import annotations

import asyncio
import time

from providers.base import Member
from providers.limits import LimitPolicy, ProviderLimits
from tests.providers.harness import Harness, fast_retry

NO_CLIENT_LIMIT = {p: LimitPolicy() for p in ("mailchimp", "activecampaign", "sendlane")}


def _seed_members(harness: Harness, count: int) -> tuple[str, list[str]]:
    list_id, _ = harness.seed_list("Big")
    emails = [f"m{i}@shop.test" for i in range(count)]
    for email in emails:
        harness.seed_member(list_id, email)
    return list_id, emails


async def test_mailchimp_never_exceeds_ten_connections(mailchimp: Harness) -> None:
    list_id, emails = _seed_members(mailchimp, 40)
    mailchimp.fake.faults.latency = 0.03
    async with mailchimp.client(limits=ProviderLimits(), concurrency=40) as client:
        result = await client.remove_from_list(list_id, emails)
    assert result.ok
    assert mailchimp.fake.peak_in_flight <= 10
    assert mailchimp.fake.stats["rate_limited"] == 0


async def test_mailchimp_limiter_is_shared_by_clients_of_one_account(mailchimp: Harness) -> None:
    list_id, emails = _seed_members(mailchimp, 40)
    mailchimp.fake.faults.latency = 0.03
    limits = ProviderLimits()  # one per worker: every client of the account shares it
    async with (
        mailchimp.client(limits=limits, concurrency=20) as one,
        mailchimp.client(limits=limits, concurrency=20) as two,
    ):
        results = await asyncio.gather(
            one.remove_from_list(list_id, emails[:20]), two.remove_from_list(list_id, emails[20:])
        )
    assert all(r.ok for r in results)
    assert mailchimp.fake.peak_in_flight <= 10
    assert mailchimp.fake.stats["rate_limited"] == 0


async def test_mailchimp_connection_limit_429s_are_retried(mailchimp: Harness) -> None:
    list_id, emails = _seed_members(mailchimp, 40)
    mailchimp.fake.faults.latency = 0.03
    retry = fast_retry(30, on_retry=mailchimp.record_retry)
    limits = ProviderLimits(NO_CLIENT_LIMIT)
    async with mailchimp.client(limits=limits, retry=retry, concurrency=40) as client:
        result = await client.remove_from_list(list_id, emails)
    assert result.ok
    assert mailchimp.fake.stats["rate_limited"] > 0
    assert not any(mailchimp.on_list(list_id, e) for e in emails)


async def test_activecampaign_stays_under_five_per_second(activecampaign: Harness) -> None:
    activecampaign.fake.rate_limit = (5, 1.0)
    activecampaign.fake.fractional_retry_after = False
    list_id, _ = activecampaign.seed_list("Paced")
    emails = [f"n{i}@shop.test" for i in range(4)]
    started = time.monotonic()
    async with activecampaign.client(limits=ProviderLimits()) as client:  # real 5 req/s
        result = await client.upsert_members(list_id, [Member(e) for e in emails])
    assert result.ok
    assert activecampaign.fake.stats["requests"] == 9  # list check + (sync, subscribe) x 4
    assert activecampaign.fake.stats["rate_limited"] == 0
    assert time.monotonic() - started >= 1.0


async def test_activecampaign_429_retry_after_is_honoured(activecampaign: Harness) -> None:
    activecampaign.fake.rate_limit = (5, 1.0)
    activecampaign.fake.fractional_retry_after = False  # whole seconds, as the real API
    list_id, _ = activecampaign.seed_list("Unpaced")
    emails = [f"n{i}@shop.test" for i in range(4)]
    started = time.monotonic()
    async with activecampaign.client(limits=ProviderLimits(NO_CLIENT_LIMIT)) as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails])
    assert result.ok
    assert activecampaign.fake.stats["rate_limited"] > 0
    assert time.monotonic() - started >= 1.0  # waited the Retry-After: 1
    assert all(activecampaign.subscribed(list_id, e) for e in emails)


async def test_sendlane_window_limit_is_kept(sendlane: Harness) -> None:
    # 240/min scaled down to 12 per 0.5 s so the test takes a few seconds. The margin covers
    # the gap between when the client sends and when the server counts, which grows when the
    # machine is busy (a 0.05 s margin failed under a full parallel CI load).
    sendlane.fake.rate_limit = (12, 0.5)
    limits = ProviderLimits({"sendlane": LimitPolicy(max_calls=12, period=0.5, margin=0.3)})
    list_id, segments = sendlane.seed_list("Paced", "VIP")
    emails = [f"s{i}@shop.test" for i in range(8)]
    async with sendlane.client(limits=limits) as client:
        assert (await client.upsert_members(list_id, [Member(e) for e in emails])).ok
        assert (await client.add_to_segment(list_id, segments["VIP"], emails)).ok
    assert sendlane.fake.stats["rate_limited"] == 0
    await sendlane.settle()
    assert all(sendlane.in_segment(list_id, segments["VIP"], e) for e in emails)


async def test_sendlane_429_without_retry_after_backs_off(sendlane: Harness) -> None:
    sendlane.fake.rate_limit = (12, 0.5)
    list_id, segments = sendlane.seed_list("Unpaced", "VIP")
    emails = [f"s{i}@shop.test" for i in range(8)]
    retry = fast_retry(40, on_retry=sendlane.record_retry)
    async with sendlane.client(limits=ProviderLimits(NO_CLIENT_LIMIT), retry=retry) as client:
        assert (await client.upsert_members(list_id, [Member(e) for e in emails])).ok
        assert (await client.add_to_segment(list_id, segments["VIP"], emails)).ok
    assert sendlane.fake.stats["rate_limited"] > 0
    await sendlane.settle()
    assert all(sendlane.in_segment(list_id, segments["VIP"], e) for e in emails)
