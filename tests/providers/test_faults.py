"""Storms of 429s, 5xx and dropped connections: retries absorb them, the end state is right.

Each test runs the same sync scenario against each provider's fake with one kind of
fault turned up, then checks the provider holds exactly what the scenario asked.
"""

from __future__ import annotations

from providers.base import Member, ProviderClient
from tests.providers.harness import Harness, fast_retry

EMAILS = [f"p{i}@shop.test" for i in range(12)]


async def run_scenario(client: ProviderClient, list_id: str, vip: str) -> None:
    """Upsert 12, tag 8, untag 3 of them: every call must report full success."""
    upserted = await client.upsert_members(list_id, [Member(e, first_name="P") for e in EMAILS])
    assert upserted.ok, upserted.failed
    tagged = await client.add_to_segment(list_id, vip, EMAILS[:8])
    assert tagged.ok, tagged.failed
    untagged = await client.remove_from_segment(list_id, vip, EMAILS[5:8])
    assert untagged.ok, untagged.failed


async def assert_end_state(harness: Harness, list_id: str, vip: str) -> None:
    await harness.settle()
    assert all(harness.on_list(list_id, e) and harness.subscribed(list_id, e) for e in EMAILS)
    assert [e for e in EMAILS if harness.in_segment(list_id, vip, e)] == EMAILS[:5]


async def _storm(harness: Harness, stat: str) -> None:
    list_id, segments = harness.seed_list("Storm", "VIP")
    async with harness.client(retry=fast_retry(20, on_retry=harness.record_retry)) as client:
        await run_scenario(client, list_id, segments["VIP"])
    harness.fake.faults.__init__()  # calm, so the inspection below is not disturbed
    await assert_end_state(harness, list_id, segments["VIP"])
    assert harness.fake.stats[stat] > 0 and harness.retries


async def test_429_storm_is_absorbed(harness: Harness) -> None:
    harness.fake.faults.rate_429 = 0.4
    await _storm(harness, "rate_limited")


async def test_5xx_are_retried(harness: Harness) -> None:
    harness.fake.faults.rate_5xx = 0.3
    await _storm(harness, "server_errors")


async def test_dropped_answers_are_retried_safely(harness: Harness) -> None:
    # The request took effect and the answer was lost: the retry repeats the write.
    harness.fake.faults.drop_rate = 0.2
    await _storm(harness, "drops")


async def test_connections_dropped_before_processing_are_retried(harness: Harness) -> None:
    harness.fake.faults.drop_rate = 0.2
    harness.fake.faults.drop_after_apply = False
    await _storm(harness, "drops")


async def test_slow_provider_with_mixed_faults(harness: Harness) -> None:
    faults = harness.fake.faults
    faults.latency, faults.latency_jitter = 0.002, 0.01
    faults.rate_429, faults.rate_5xx, faults.drop_rate = 0.1, 0.1, 0.05
    await _storm(harness, "requests")
