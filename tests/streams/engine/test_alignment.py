"""Event-time order across co-partitioned topics: profiles before the orders produced after them.

The aligner on its own with hand-made records, then a processor started cold on a backlog of
profiles and then orders: every membership event carries the profile's email.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import TopicPartition
from redis.asyncio import Redis

from streams.broker.topics import TopicNames
from streams.engine.alignment import EventTimeAligner
from streams.settings import Settings
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    define,
    event,
    order,
    produce,
    read_topic,
    running_processor,
)

C0, O0 = TopicPartition("customers", 0), TopicPartition("orders", 0)
C1 = TopicPartition("customers", 1)


@dataclass
class R:
    topic: str
    partition: int
    offset: int
    timestamp: int


def recs(tp: TopicPartition, *stamps: int, start: int = 0) -> list[R]:
    return [R(tp.topic, tp.partition, start + n, ts) for n, ts in enumerate(stamps)]


def aligner(ends: dict[TopicPartition, int], idle_ms: int = 300) -> EventTimeAligner:
    found = EventTimeAligner(["customers", "orders"], idle_ms, ends.get)
    found.assign({C0: 0, O0: 0, C1: 0})
    return found


def order_of(released: list[R]) -> list[tuple[str, int]]:
    return [(r.topic, r.timestamp) for r in released]


def test_records_of_a_partition_go_in_timestamp_order_across_topics() -> None:
    ends = {C0: 3, O0: 3, C1: 0}
    a = aligner(ends)
    a.add({O0: recs(O0, 20, 30, 40), C0: recs(C0, 10, 25, 35)})
    released, positions = a.release(now_ms=0, limit=100)
    assert order_of(released) == [("customers", 10), ("orders", 20), ("customers", 25),
                                  ("orders", 30), ("customers", 35), ("orders", 40)]
    assert positions == {("customers", 0): 3, ("orders", 0): 3}


def test_an_input_with_records_at_the_broker_but_none_fetched_is_waited_for() -> None:
    ends = {C0: 2, O0: 5, C1: 0}  # orders has 5 records; 2 fetched so far
    a = aligner(ends, idle_ms=300)
    a.add({O0: recs(O0, 20, 30), C0: recs(C0, 10, 50)})
    released, _ = a.release(now_ms=1_000, limit=100)
    # orders runs dry at 30 while customers still holds 50: its next record may be earlier
    assert order_of(released) == [("customers", 10), ("orders", 20), ("orders", 30)]
    assert a.release(now_ms=1_100, limit=100)[0] == []  # still waiting for orders
    a.add({O0: recs(O0, 45, 60, 70, start=2)})
    ends[O0] = 5
    released, positions = a.release(now_ms=1_150, limit=100)
    assert order_of(released) == [("orders", 45), ("customers", 50), ("orders", 60),
                                  ("orders", 70)]
    assert positions == {("customers", 0): 2, ("orders", 0): 5}


def test_the_wait_is_bounded_and_an_input_with_nothing_to_fetch_holds_nobody() -> None:
    ends = {C0: 1, O0: 9, C1: 2}
    a = aligner(ends, idle_ms=300)
    a.add({C0: recs(C0, 10), C1: recs(C1, 5, 6)})
    released, _ = a.release(now_ms=0, limit=100)
    assert order_of(released) == [("customers", 5), ("customers", 6)]  # partition 1 only
    assert a.release(now_ms=299, limit=100)[0] == []  # partition 0 waits for orders
    assert order_of(a.release(now_ms=300, limit=100)[0]) == [("customers", 10)]


def test_a_full_buffer_is_paused_and_revoked_partitions_are_forgotten() -> None:
    a = EventTimeAligner(["customers", "orders"], 300, {C0: 9, O0: 9}.get, max_buffered=3)
    a.assign({C0: 0, O0: 0})
    a.add({C0: recs(C0, 1, 2, 3)})
    assert a.full() == {C0}
    a.revoke([0])
    assert a.buffered == 0 and a.full() == set()
    a.add({C0: recs(C0, 4)})  # a late fetch of a revoked partition is not ours
    assert a.buffered == 0


async def test_a_cold_backlog_of_profiles_then_orders_yields_members_with_their_email(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    customers = [f"c-cold{n}" for n in range(300)]
    await produce(settings, [event("customer.created", c, f"{c}-p", {"email": f"{c}@shop.test"})
                             for c in customers])
    await asyncio.sleep(0.05)  # the orders' record timestamps come after every profile's
    await produce(settings, [order(c, 1, "150") for c in customers])
    async with running_processor(settings, redis_client):
        topic = TopicNames(settings.topic_prefix).membership
        added = changes(await read_topic(settings, topic, len(customers), timeout=60))
    assert sorted(c["customer_id"] for c in added) == sorted(customers)
    assert [c["customer_id"] for c in added if c["email"] is None] == []
