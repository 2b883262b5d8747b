"""Reconcile: members from the processor's Redis layout vs. what the provider holds."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from providers.batching import Target
from providers.reconcile import ReconcileResult, drift, reconcile
from streams.storage.state import StateStore
from tests.providers.harness import Harness
from tests.streams.helpers import seed_member

SLOT = 0


async def seed_members(redis: Redis, prefix: str, segment: str, people: dict[str, str | None]
                       ) -> None:
    for n, (customer, email) in enumerate(sorted(people.items())):
        await seed_member(redis, prefix, n % 3, SLOT, segment, customer, email)


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

    members = await StateStore(redis_client, prefix).segment_emails(3, SLOT)
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


async def test_reconcile_reads_the_provider_itself(redis_client: Redis, harness: Harness) -> None:
    """No ``read_provider``: ``list_members`` says who is there (each provider in turn)."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    list_id, segments = harness.seed_list("Shop", "VIP")
    vip = segments["VIP"]
    await seed_members(redis_client, prefix, "seg", {
        "a": "a@shop.test", "b": "B@shop.test", "c": "c@shop.test", "nomail": None})
    for email in ("a@shop.test", "stale@shop.test", "bystander@shop.test"):
        harness.seed_member(list_id, email)
    members = await StateStore(redis_client, prefix).segment_emails(3, SLOT)
    target = Target("p", list_id, vip)
    async with harness.client(page_size=2) as client:
        assert (await client.add_to_segment(list_id, vip, ["a@shop.test", "stale@shop.test"])).ok
        await harness.settle()
        planned = await reconcile(client, target, members, dry_run=True)
        assert (planned.added, planned.removed) == (["B@shop.test", "c@shop.test"],
                                                    ["stale@shop.test"])
        await harness.settle()
        assert await client.list_members(list_id, vip) == {"a@shop.test", "stale@shop.test"}
        done = await reconcile(client, target, members)
        await harness.settle()
        again = await reconcile(client, target, members)
        in_vip = await client.list_members(list_id, vip)
        on_list = await client.list_members(list_id, None)
    assert done.added == ["B@shop.test", "c@shop.test"] and done.removed == ["stale@shop.test"]
    assert not done.failed and again == ReconcileResult(without_email=["nomail"])
    assert in_vip == {"a@shop.test", "b@shop.test", "c@shop.test"}
    assert {"stale@shop.test", "bystander@shop.test"} <= on_list  # off the tag, not the list
    assert harness.subscribed(list_id, "stale@shop.test") and harness.resubscribes() == 0


async def test_reconcile_without_a_segment_takes_extras_off_the_list(
    redis_client: Redis, mailchimp: Harness
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    list_id, _ = mailchimp.seed_list("Shop")
    await seed_members(redis_client, prefix, "seg", {"a": "a@shop.test", "b": "b@shop.test"})
    mailchimp.seed_member(list_id, "a@shop.test")
    mailchimp.seed_member(list_id, "stale@shop.test", subscribed=False)
    members = await StateStore(redis_client, prefix).segment_emails(3, SLOT)
    async with mailchimp.client(page_size=1) as client:
        done = await reconcile(client, Target("p", list_id, None), members)
        assert await client.list_members(list_id, None) == {"a@shop.test", "b@shop.test"}
    assert (done.added, done.removed) == (["b@shop.test"], ["stale@shop.test"])
    member = mailchimp.fake.state.member(list_id, "stale@shop.test")
    assert member is not None and member.archived and member.status == "unsubscribed"
