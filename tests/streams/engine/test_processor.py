"""The processor end to end on the real embedded broker and Redis-compatible server."""

from __future__ import annotations

import gc
import logging

import orjson
import pytest
from aiokafka import TopicPartition
from redis.asyncio import Redis

from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames, high_watermarks
from streams.engine.collector import YOUNG_THRESHOLD, Collector
from streams.engine.processor import PartitionCountChanged, Processor
from streams.ops.lag import consumer_lag, groups_and_topics
from streams.settings import Settings
from streams.storage.state import PartitionKeys, StateStore
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    define,
    event,
    members,
    order,
    produce,
    read_topic,
    running_processor,
    state_of,
    wait_for,
)

US_GOLD = {"name": "US gold", "groups": [{"conditions": [
    {"field": "billing_country", "op": "eq", "value": "US"},
    {"field": "products_purchased", "op": "includes_any", "value": ["p-gold"]}]}]}


async def test_events_become_state_and_membership_changes(settings: Settings, redis_client: Redis):
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    await define(settings, redis_client, "us-gold", US_GOLD)
    topics = TopicNames(settings.topic_prefix)
    thresholds = gc.get_threshold()
    async with running_processor(settings, redis_client):
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD  # young collections are rarer
        await produce(settings, [
            event("customer.created", "c-1", "e1", {"email": "A@Example.com",
                                                     "billing": {"country": "US"}}),
            order("c-1", 1, "60.00", ["p-gold"]),
            order("c-1", 2, "50.00"),
            event("order.refunded", "c-1", "e4", {"order_id": "c-1-order-2", "amount": "20"}),
        ])
        records = await read_topic(settings, topics.membership, 3)
    # customers and orders are separate topics: order holds per topic, so compare per segment
    per_segment: dict[str, list[tuple[str, str]]] = {}
    assert gc.get_threshold() == thresholds  # and the process's own are back once it stopped
    for c in changes(records):
        per_segment.setdefault(c["segment_id"], []).append((c["type"], c["reason"]))
    assert per_segment == {
        "us-gold": [("segment.member_added", "event")],
        "big": [("segment.member_added", "event"), ("segment.member_removed", "event")],
    }
    big_added = next(c for c in changes(records) if c["segment_id"] == "big")
    assert big_added["customer_id"] == "c-1" and big_added["cause_event_id"] == "c-1-o2"
    assert big_added["segment_version"] == 1
    gold = next(c for c in changes(records) if c["segment_id"] == "us-gold")
    assert gold["email"] == "A@Example.com"
    assert records[0].key == b"c-1"
    state = await state_of(settings, redis_client, "c-1")
    assert state.order_count == 2
    assert await members(settings, redis_client, "us-gold") == {"c-1"}
    assert await members(settings, redis_client, "big") == set()


def test_the_collector_threshold_is_restored_when_the_last_of_several_loops_stops():
    saved = gc.get_threshold()
    young = Collector()
    try:
        gc.set_threshold(900, 11, 12)
        young.enter()
        young.enter()  # a second processor in the same process (tests, `segstream up`)
        young.exit()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)  # one loop still runs
        young.exit()
        assert gc.get_threshold() == (900, 11, 12)
    finally:
        gc.set_threshold(*saved)


BAD_INPUTS = [
    ("customers", b"{not json", "invalid_json"),
    ("customers", orjson.dumps(event("customer.teleported", "c-9", "b1")), "unknown_type"),
    ("orders", orjson.dumps(event("order.placed", "c-9", "b2", {"order_id": "x"})),
     "missing_field"),
    ("orders", orjson.dumps(event("order.placed", "c-9", "b3", {"order_id": 5, "total": 1})),
     "wrong_type"),
    ("customers", orjson.dumps(event("customer.created", "c-9", "b4",
                                     at="2026-11-28T17:32:00")), "invalid_value"),
    ("customers", orjson.dumps(event("customer.created", "c-9", "x" * 129)), "invalid_value"),
    ("customers", orjson.dumps(event("order.placed", "c-9", "b6",
                                     {"order_id": "o", "total": 3})), "wrong_topic"),
]


async def test_bad_input_goes_to_the_dead_letter_topic_and_processing_goes_on(
    settings: Settings, redis_client: Redis
):
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    async with running_processor(settings, redis_client):
        await produce(settings, [(topic, raw) for topic, raw, _ in BAD_INPUTS])
        await produce(settings, [order("c-9", 1, "10")])
        await wait_for(lambda: _order_count(settings, redis_client, "c-9", 1), what="good event")
        dead = await read_topic(settings, topics.dlq, len(BAD_INPUTS))
    by_value = {r.value: dict(r.headers) for r in dead}
    assert len(dead) == len(BAD_INPUTS)
    for topic, raw, code in BAD_INPUTS:
        headers = by_value[raw]  # original bytes kept
        assert headers["segstream.error.code"].decode() == code, raw
        assert headers["__connect.errors.topic"].decode() == getattr(topics, topic)
        assert headers["__connect.errors.exception.message"]
        assert int(headers["__connect.errors.offset"]) >= 0


async def _order_count(settings: Settings, redis: Redis, customer_id: str, n: int) -> bool:
    state = await state_of(settings, redis, customer_id)
    return state is not None and state.order_count == n


async def test_repeated_event_id_changes_nothing(settings: Settings, redis_client: Redis):
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    topics = TopicNames(settings.topic_prefix)
    async with running_processor(settings, redis_client) as processor:
        first = order("c-2", 1, "150")
        await produce(settings, [first, first, order("c-2", 2, "5"), first])
        await wait_for(lambda: _order_count(settings, redis_client, "c-2", 2), what="2 orders")
        assert processor.engine is not None
        await wait_for(_stat(processor, "duplicates", 2), what="duplicates counted")
        records = await read_topic(settings, topics.membership, 1)
    state = await state_of(settings, redis_client, "c-2")
    assert state.total_spent == 155 * 10_000
    assert [c["type"] for c in changes(records)] == ["segment.member_added"]


def _stat(processor, name: str, at_least: int):
    async def check() -> bool:
        return getattr(processor.engine.stats, name) >= at_least
    return check


async def test_customer_events_on_any_partition_meet_in_one_state(
    settings: Settings, redis_client: Redis
):
    """Producers with another partitioner (librdkafka's CRC32) place a customer anywhere."""
    await create_topics(settings)
    owner = owner_partition("c-spread", settings.partitions)
    others = [p for p in range(settings.partitions) if p != owner]
    events = [event("customer.created", "c-spread", "s0", {"email": "s@example.com"})]
    events += [order("c-spread", n, "10") for n in range(1, 9)]
    placement = {e["event_id"]: others[i % len(others)] for i, e in enumerate(events)}
    async with running_processor(settings, redis_client) as processor:
        await produce(settings, events, partition=lambda e: placement[e["event_id"]])
        await wait_for(lambda: _order_count(settings, redis_client, "c-spread", 8), what="8 orders")
        assert processor.engine is not None
        assert processor.engine.stats.forwarded >= len(events)
    state = await state_of(settings, redis_client, "c-spread")
    assert state.email == "s@example.com" and state.contact_type == "customer"


async def test_restart_resumes_from_stored_offsets_without_reapplying(
    settings: Settings, redis_client: Redis
):
    settings = settings.with_changes(session_timeout_ms=3000)  # the rejoin waits for the old member
    await create_topics(settings)
    async with running_processor(settings, redis_client):
        await produce(settings, [order("c-3", n, "1") for n in range(5)])
        await wait_for(lambda: _order_count(settings, redis_client, "c-3", 5), what="5 orders")
    async with running_processor(settings, redis_client):
        await produce(settings, [order("c-3", n, "1") for n in range(5, 8)])
        await wait_for(lambda: _order_count(settings, redis_client, "c-3", 8), what="8 orders")
    state = await state_of(settings, redis_client, "c-3")
    assert state.order_count == 8


async def test_customer_deleted_erases_state_and_leaves_every_segment(
    settings: Settings, redis_client: Redis
):
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    topics = TopicNames(settings.topic_prefix)
    async with running_processor(settings, redis_client):
        await produce(settings, [order("c-4", 1, "500")])
        # customers and orders are separate topics, ordered each on its own: let the order land
        await wait_for(lambda: _order_count(settings, redis_client, "c-4", 1), what="the order")
        await produce(settings, [event("customer.deleted", "c-4", "d1")])
        records = await read_topic(settings, topics.membership, 2)
    assert [(c["type"], c["reason"]) for c in changes(records)] == [
        ("segment.member_added", "event"), ("segment.member_removed", "customer_deleted")]
    assert await state_of(settings, redis_client, "c-4") is None
    assert await members(settings, redis_client, "big") == set()


async def test_definition_changes_backfill_while_running(settings: Settings, redis_client: Redis):
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    async with running_processor(settings, redis_client):
        await produce(settings, [order(f"c-b{n}", 1, str(n * 50)) for n in range(1, 5)])
        await wait_for(lambda: _order_count(settings, redis_client, "c-b4", 1), what="orders")
        await define(settings, redis_client, "big", BIG_SPENDERS)  # >= 100: c-b2, c-b3, c-b4
        await wait_for(lambda: _has_members(settings, redis_client, "big", 3), what="backfill")
        raised = dict(BIG_SPENDERS, groups=[{"conditions": [
            {"field": "total_spent", "op": "gte", "value": 150}]}])
        await define(settings, redis_client, "big", raised)  # c-b2 leaves
        await wait_for(lambda: _has_members(settings, redis_client, "big", 2), what="edit diff")
        records = await read_topic(settings, topics.membership, 4)
    got = sorted((c["customer_id"], c["type"], c["segment_version"]) for c in changes(records))
    assert got == [
        ("c-b2", "segment.member_added", 1), ("c-b2", "segment.member_removed", 2),
        ("c-b3", "segment.member_added", 1), ("c-b4", "segment.member_added", 1),
    ]
    assert {c["reason"] for c in changes(records)} == {"backfill"}


async def _has_members(settings: Settings, redis: Redis, segment_id: str, n: int) -> bool:
    return len(await members(settings, redis, segment_id)) == n


async def test_state_ahead_of_the_broker_is_detected_and_reset(
    settings: Settings, redis_client: Redis, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    """Memory-only brokers forget everything on restart while Redis keeps its state. The
    broker's ends are read only where an offset is stored (a throwaway consumer's fetch)."""
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    stale = PartitionKeys(settings.key_prefix, 0)
    await redis_client.hset(stale.offsets, f"{topics.customers}:0", 10_000)
    await redis_client.hset(stale.state, "c-ghost", b"stale")
    asked: list[set[TopicPartition]] = []

    async def recorded(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(set(tps))
        return await high_watermarks(bootstrap, tps)

    monkeypatch.setattr("streams.engine.processor.high_watermarks", recorded)
    caplog.set_level(logging.ERROR, logger="segstream.processor")
    async with running_processor(settings, redis_client):
        pass
    assert "lost its data" in caplog.text
    assert await redis_client.hget(stale.state, "c-ghost") is None
    assert asked == [{TopicPartition(topics.customers, 0)}]


async def test_input_topics_with_another_partition_count_than_the_state_are_refused(
    settings: Settings, redis_client: Redis
):
    """The state is kept per partition of murmur2(customer_id) mod count: a processor meeting
    topics of another count refuses to start, saying what to do, instead of misplacing every
    customer; the count it was built for is kept."""
    async with running_processor(settings, redis_client):
        pass
    grown = settings.with_changes(topic_prefix=f"{settings.topic_prefix}grown.", partitions=6)
    with pytest.raises(PartitionCountChanged, match=r"built for 4 partitions .* now have 6"):
        await Processor(grown, redis_client).run()
    kept = await StateStore(redis_client, settings.key_prefix).global_meta()
    assert kept["partitions"] == "4"


async def test_a_deleted_segment_recreated_with_the_same_id_gets_its_members_back(
    settings: Settings, redis_client: Redis
):
    from streams.storage.definitions import DefinitionStore

    await create_topics(settings)
    store = DefinitionStore(redis_client, settings.key_prefix)
    topics = TopicNames(settings.topic_prefix)
    async with running_processor(settings, redis_client):
        await produce(settings, [order(f"c-r{n}", 1, str(n * 50)) for n in range(1, 5)])
        await wait_for(lambda: _order_count(settings, redis_client, "c-r4", 1), what="orders")
        await store.put("big", BIG_SPENDERS)
        await wait_for(lambda: _has_members(settings, redis_client, "big", 3), what="backfill")
        await store.delete("big")
        await wait_for(lambda: _has_members(settings, redis_client, "big", 0), what="removals")
        again = await store.put("big", BIG_SPENDERS)
        assert again.version == 2  # versions continue: "big@1" keeps naming the first one
        await wait_for(lambda: _has_members(settings, redis_client, "big", 3), what="re-added")
        records = await read_topic(settings, topics.membership, 9)
    got = [(c["customer_id"], c["type"], c["reason"], c["segment_version"])
           for c in changes(records) if c["customer_id"] == "c-r2"]
    assert got == [
        ("c-r2", "segment.member_added", "backfill", 1),
        ("c-r2", "segment.member_removed", "segment_deleted", 1),
        ("c-r2", "segment.member_added", "backfill", 2),
    ]


async def test_group_lag_reaches_zero_while_the_processor_runs(
    settings: Settings, redis_client: Redis
):
    """Operators watch the group's lag: the processor commits its offsets to Kafka as it goes
    (beside its loop), not only when it stops."""
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    topics = TopicNames(settings.topic_prefix)
    assert settings.kafka_bootstrap
    groups = groups_and_topics(topics, settings.group_id)[:1]

    async def caught_up() -> bool:
        rows = await consumer_lag(settings.kafka_bootstrap or "", groups)
        busy = [r for r in rows if r.end]
        return bool(busy) and all(r.lag == 0 for r in busy)

    async with running_processor(settings, redis_client):
        await produce(settings, [order(f"c-lag{n}", 1, "120") for n in range(30)])
        await produce(settings, [event("customer.created", f"c-lag{n}", f"cl{n}")
                                 for n in range(10)])
        await wait_for(caught_up, what="the group's committed offsets to reach the ends")
        rows = await consumer_lag(settings.kafka_bootstrap, groups)
    assert sum(r.end for r in rows if r.topic == topics.orders) == 30
    assert sum(r.end for r in rows if r.topic == topics.customers) == 10
