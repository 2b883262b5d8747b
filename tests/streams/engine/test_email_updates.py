"""`segment.member_updated`: a current member's email set or changed, one record per segment
the customer stays in, outside the added/removed alternation."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    engine_on,
    event,
    order,
    read_topic,
    records,
)

CUSTOMERS = {"name": "Customers", "groups": [{"conditions": [
    {"field": "contact_type", "op": "eq", "value": "customer"}]}]}


async def test_an_email_set_then_changed_is_told_to_every_segment_the_member_stays_in(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    await definitions.put("big", BIG_SPENDERS)
    await definitions.put("customers", CUSTOMERS)
    topics = TopicNames(settings.topic_prefix)
    now = int(time.time() * 1000)
    offsets: dict[tuple[str, int], int] = {}
    steps = [
        [order("c-mail", 1, "150")],  # joins both, no email yet
        [event("customer.updated", "c-mail", "u1", {"email": "ann@example.com"})],
        [event("customer.updated", "c-mail", "u2", {"first_name": "Ann"})],  # no email change
        [event("customer.updated", "c-mail", "u3", {"email": "ann@shop.test"})],
        [event("customer.created", "c-other", "p1", {"email": "x@example.com"}),
         event("customer.updated", "c-other", "p2", {"email": "y@example.com"})],  # no member
    ]
    async with engine_on(settings, redis_client) as rig:
        for n, batch in enumerate(steps):
            await rig.process(records(settings, batch, offsets), now + n)
        assert rig.engine.stats.email_updates == 4
    sent = changes(await read_topic(settings, topics.membership, 2 + 4))
    updates = sorted((c["segment_id"], c["email"], c["previous_email"], c["cause_event_id"])
                     for c in sent if c["type"] == "segment.member_updated")
    assert updates == [
        ("big", "ann@example.com", None, "u1"), ("big", "ann@shop.test", "ann@example.com", "u3"),
        ("customers", "ann@example.com", None, "u1"),
        ("customers", "ann@shop.test", "ann@example.com", "u3")]
    assert all(c["reason"] == "event" for c in sent)
    added = [(c["segment_id"], c["email"]) for c in sent if c["type"] == "segment.member_added"]
    assert sorted(added) == [("big", None), ("customers", None)]


async def test_joining_with_a_new_email_is_one_added_record_only(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("customers", CUSTOMERS)
    topics = TopicNames(settings.topic_prefix)
    placed = event("order.placed", "c-join", "o1", {"order_id": "o1", "total": "5"})
    profile = event("customer.updated", "c-join", "u1", {"email": "j@example.com"})
    async with engine_on(settings, redis_client) as rig:
        await rig.process(records(settings, [profile, placed], {}), int(time.time() * 1000))
    sent = changes(await read_topic(settings, topics.membership, 1))
    assert [(c["type"], c["email"]) for c in sent] == [("segment.member_added", "j@example.com")]
