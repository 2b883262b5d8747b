"""Backfill interleaved with live batches, driven step by step on the real broker and Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis

from segments.events import TOPIC_OF_TYPE
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.engine.test_processor import BIG_SPENDERS, order
from tests.streams.helpers import changes, create_topics, engine_on, members, read_topic


@dataclass
class Rec:
    """A consumed record, as the engine reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def records(settings: Settings, events: list[dict], offsets: dict[tuple[str, int], int]
            ) -> list[Rec]:
    """Consumed records of `events`, each on its type's topic at its owner partition, at the
    next offset of that topic-partition in `offsets` (which moves on)."""
    topics = TopicNames(settings.topic_prefix)
    out = []
    for e in events:
        topic = getattr(topics, TOPIC_OF_TYPE[e["type"]])
        tp = (topic, owner_partition(e["customer_id"], settings.partitions))
        at = offsets.get(tp, 0)
        out.append(Rec(topic, tp[1], at, e["customer_id"].encode(), orjson.dumps(e)))
        offsets[tp] = at + 1
    return out


async def test_live_events_between_backfill_steps_are_neither_lost_nor_emitted_twice(
    settings: Settings, redis_client: Redis
):
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client) as engine:
        customers = [f"c-live{n}" for n in range(200)]
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        await engine.process(records(settings, [order(c, 1, "90") for c in customers], offsets),
                             now)
        await definitions.put("big", BIG_SPENDERS)  # nobody qualifies yet
        engine.set_definitions(await definitions.load())
        for p in range(settings.partitions):
            assert await engine.start_reconcile(p)
            await engine.reconcile_step(p, now, chunk=10)  # part of each partition scanned
        assert all(plan.cursor != 0 for plan in engine.backfills.values())
        live = [order(c, 2, "20") for c in customers[::2]]  # half of them cross the line
        await engine.process(records(settings, live, offsets), now)
        assert engine.stats.applied_during_backfill == len(live)
        while engine.backfills:
            for p in list(engine.backfills):
                await engine.reconcile_step(p, now, chunk=10)
        membership = await read_topic(settings, topics.membership, len(live))
    per_customer: dict[str, list[tuple[str, str]]] = {}
    for c in changes(membership):
        per_customer.setdefault(c["customer_id"], []).append((c["type"], c["reason"]))
    assert per_customer == {c: [("segment.member_added", "event")] for c in customers[::2]}
    assert await members(settings, redis_client, "big") == set(customers[::2])


async def test_a_partition_without_stored_customers_is_marked_reconciled_without_a_backfill(
    settings: Settings, redis_client: Redis
):
    """A first start with segments already defined: the empty partitions plan no backfill
    (whose step would close the first batch's commit group), and record the definitions they
    match at once; a partition holding customers still backfills them."""
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client) as engine:
        now = int(time.time() * 1000)
        customer = "c-only"
        held = owner_partition(customer, settings.partitions)
        await engine.process(records(settings, [order(customer, 1, "150")], {}), now)
        await definitions.put("big", BIG_SPENDERS)
        engine.set_definitions(await definitions.load())
        fingerprint = engine.definitions.fingerprint()
        planned = {p for p in range(settings.partitions) if await engine.start_reconcile(p)}
        assert planned == {held}
        assert set(engine.backfills) == {held}
        reconciled = await engine.store.reconciled(settings.partitions)
        assert [p for p in range(settings.partitions) if reconciled[p] == {fingerprint}] == [
            p for p in range(settings.partitions) if p != held]
        while engine.backfills:
            await engine.reconcile_step(held, now)
        assert await members(settings, redis_client, "big") == {customer}
        assert await engine.store.reconciled(settings.partitions) == [
            frozenset({fingerprint})] * settings.partitions
