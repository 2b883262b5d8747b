"""The sync worker and a member's email: sent when it arrives, moved when it changes, always
the newest. Membership records on the real broker, real clients against the fakes."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from providers.fakes.mailchimp import subscriber_hash
from streams.broker.topics import TopicNames
from streams.settings import Settings
from tests.providers.harness import Harness
from tests.streams.helpers import read_topic, wait_for
from tests.streams.sync.test_worker import (
    all_committed,
    change,
    send,
    setup_target,
    sync_settings,  # noqa: F401  (fixture)
    until,
    worker,
)


def updated(segment: str, customer: str, previous: str | None, email: str) -> dict[str, Any]:
    """A `segment.member_updated` (contract section 7)."""
    return {
        "event_id": uuid.uuid4().hex, "type": "segment.member_updated",
        "segment_id": segment, "segment_version": 1, "customer_id": customer,
        "email": email, "previous_email": previous, "changed_at": "2026-11-28T17:32:00.120Z",
        "reason": "event", "cause_event_id": uuid.uuid4().hex,
    }


async def test_a_member_without_email_is_sent_once_its_email_arrives(
    sync_settings: Settings, redis_client: Redis, harness: Harness  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, harness, "VIP")
    assert tag is not None
    # p joins as a prospect without email; q joins and gives one within the same batch
    await send(sync_settings, [
        change("seg-vip", "p", True, email=None), change("seg-vip", "c1", True),
        change("seg-vip", "q", True, email=None), updated("seg-vip", "q", None, "q@shop.test"),
    ])
    async with worker(sync_settings, redis_client) as (counters, task):
        await wait_for(until(harness, task, lambda: harness.in_segment(
            list_id, tag, "c1@shop.test") and harness.in_segment(list_id, tag, "q@shop.test")),
            what="c1 and q in the tag")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        dlq = await read_topic(sync_settings, TopicNames(sync_settings.topic_prefix).dlq, 1)
        missing = [orjson.loads(r.value)["customer_id"] for r in dlq
                   if dict(r.headers)["segstream.error.code"] == b"missing_email"]
        assert "p" in missing, "a member without email is dead-lettered, so it is visible"
        synced = counters.synced

        await send(sync_settings, [updated("seg-vip", "p", None, "p@shop.test")])
        await wait_for(until(harness, task, lambda: harness.in_segment(
            list_id, tag, "p@shop.test")), what="p in the tag once its email arrived")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    await harness.settle()
    assert counters.synced == synced + 1
    assert harness.subscribed(list_id, "p@shop.test")
    assert harness.resubscribes() == 0


async def test_an_email_change_moves_the_member(
    sync_settings: Settings, redis_client: Redis, harness: Harness  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, harness, "VIP")
    assert tag is not None
    harness.seed_member(list_id, "u-old@shop.test", subscribed=False)
    await send(sync_settings, [change("seg-vip", "m", True, email="m-old@shop.test"),
                               change("seg-vip", "u", True, email="u-old@shop.test")])
    async with worker(sync_settings, redis_client) as (counters, task):
        await wait_for(until(harness, task, lambda: harness.in_segment(
            list_id, tag, "m-old@shop.test")), what="m in the tag")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        await send(sync_settings, [updated("seg-vip", "m", "m-old@shop.test", "m-new@shop.test"),
                                   updated("seg-vip", "u", "u-old@shop.test", "u-new@shop.test")])
        await wait_for(until(harness, task, lambda: harness.in_segment(
            list_id, tag, "m-new@shop.test")), what="m in the tag under its new email")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    await harness.settle()
    for old in ("m-old@shop.test", "u-old@shop.test"):
        assert not harness.in_segment(list_id, tag, old)
        assert not harness.on_list(list_id, old)
    assert harness.in_segment(list_id, tag, "u-new@shop.test")
    assert harness.subscribed(list_id, "m-new@shop.test")
    assert harness.resubscribes() == 0
    assert counters.moved == 2 and counters.dead_lettered == 0


async def test_mailchimp_renames_the_member_which_keeps_its_status_and_segments(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, mailchimp, "VIP")
    assert tag is not None
    mailchimp.seed_member(list_id, "u-old@shop.test", subscribed=False)
    await send(sync_settings, [change("seg-vip", "m", True, email="m-old@shop.test"),
                               change("seg-vip", "u", True, email="u-old@shop.test")])
    async with worker(sync_settings, redis_client) as (_, task):
        await wait_for(until(mailchimp, task, lambda: mailchimp.in_segment(
            list_id, tag, "u-old@shop.test")), what="u in the tag")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        # someone put m in another segment at Mailchimp: a rename keeps it there
        other = mailchimp.fake.state.add_segment(list_id, "Other", ["m-old@shop.test"])
        await send(sync_settings, [updated("seg-vip", "m", "m-old@shop.test", "m-new@shop.test"),
                                   updated("seg-vip", "u", "u-old@shop.test", "u-new@shop.test")])
        await wait_for(until(mailchimp, task, lambda: mailchimp.in_segment(
            list_id, tag, "u-new@shop.test")), what="u in the tag under its new email")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    assert mailchimp.in_segment(list_id, tag, "m-new@shop.test")
    assert subscriber_hash("m-new@shop.test") in other.members
    assert mailchimp.fake.state.member(list_id, "m-old@shop.test") is None  # renamed
    assert not mailchimp.subscribed(list_id, "u-new@shop.test")  # still unsubscribed
    assert mailchimp.resubscribes() == 0


async def test_the_newest_email_wins_and_a_leaver_goes_under_every_email(
    sync_settings: Settings, redis_client: Redis, harness: Harness  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, harness, "VIP")
    assert tag is not None
    await send(sync_settings, [change("seg-vip", "n", True, email="n1@shop.test"),
                               change("seg-vip", "w", True, email="w1@shop.test")])
    emails = [f"{c}{i}@shop.test" for c in "nw" for i in range(1, 5)]
    async with worker(sync_settings, redis_client) as (_, task):
        await wait_for(until(harness, task, lambda: harness.in_segment(
            list_id, tag, "w1@shop.test")), what="w in the tag")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        await send(sync_settings, [
            updated("seg-vip", "n", "n1@shop.test", "n2@shop.test"),
            updated("seg-vip", "w", "w1@shop.test", "w2@shop.test"),
            updated("seg-vip", "n", "n2@shop.test", "n3@shop.test"),
            change("seg-vip", "w", False, email="w2@shop.test"),
            updated("seg-vip", "n", "n3@shop.test", "n4@shop.test"),
        ])
        await wait_for(until(harness, task, lambda: [
            e for e in emails if harness.in_segment(list_id, tag, e)] == ["n4@shop.test"]),
            what="n4 alone in the tag")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    await harness.settle()
    assert harness.subscribed(list_id, "n4@shop.test")
    assert not any(harness.on_list(list_id, f"n{i}@shop.test") for i in range(1, 4))
    assert harness.resubscribes() == 0
