"""Reconcile: members from the processor's Redis layout vs. what the provider holds."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from providers.batching import Target
from providers.reconcile import ReconcileResult, drift, reconcile, segment_emails
from segments.features import encode_state
from segments.state import FeatureState
from streams.store import PartitionKeys
from tests.providers.harness import Harness


async def seed_members(redis: Redis, prefix: str, segment: str, people: dict[str, str | None]
                       ) -> None:
    for n, (customer, email) in enumerate(sorted(people.items())):
        keys = PartitionKeys(prefix, n % 3)
        await redis.sadd(keys.members(segment), customer)
        await redis.hset(keys.state, customer, encode_state(FeatureState(email=email)))


def test_drift_is_case_insensitive() -> None:
    assert drift({"A@x.test", "b@x.test"}, {"a@x.test", "c@x.test"}) == (["b@x.test"],
                                                                          ["c@x.test"])


async def test_reconcile_adds_missing_and_removes_extra(
    redis_client: Redis, mailchimp: Harness
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    list_id, segments = mailchimp.seed_list("Shop", "VIP")
    vip = segments["VIP"]
    await seed_members(redis_client, prefix, "seg", {
        "a": "a@shop.test", "b": "b@shop.test", "c": "c@shop.test", "nomail": None})
    for email in ("a@shop.test", "stale@shop.test"):  # drift: stale is extra, b and c missing
        mailchimp.fake.state.add_member(list_id, email)
    mailchimp.fake.state.lists[list_id].segments[int(vip)].members.clear()

    async def read_provider() -> set[str]:
        return mailchimp.fake.state.segment_emails(list_id, vip)

    members = await segment_emails(redis_client, prefix, 3, "seg")
    assert members.emails == {"a@shop.test", "b@shop.test", "c@shop.test"}
    assert members.without_email == ["nomail"]
    target = Target("p", list_id, vip)
    async with mailchimp.client() as client:
        await client.add_to_segment(list_id, vip, ["a@shop.test", "stale@shop.test"])
        planned = await reconcile(client, target, members, read_provider, dry_run=True)
        assert (planned.added, planned.removed) == (["b@shop.test", "c@shop.test"],
                                                    ["stale@shop.test"])
        done = await reconcile(client, target, members, read_provider)
        again = await reconcile(client, target, members, read_provider)
    assert done.added == ["b@shop.test", "c@shop.test"] and done.removed == ["stale@shop.test"]
    assert not done.failed and again == ReconcileResult(without_email=["nomail"])
    assert await read_provider() == members.emails
    assert mailchimp.subscribed(list_id, "stale@shop.test")  # out of the segment, not unsubscribed
