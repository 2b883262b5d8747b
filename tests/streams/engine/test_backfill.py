"""Backfill interleaved with live batches, driven step by step on the real broker and Redis."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    engine_on,
    event,
    members,
    order,
    read_topic,
    records,
    state_of,
)


async def test_live_events_between_backfill_steps_are_neither_lost_nor_emitted_twice(
    settings: Settings, redis_client: Redis
):
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client) as rig:
        engine = rig.engine
        customers = [f"c-live{n}" for n in range(200)]
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        await rig.process(records(settings, [order(c, 1, "90") for c in customers], offsets),
                          now)
        await definitions.put("big", BIG_SPENDERS)  # nobody qualifies yet
        engine.set_definitions(await definitions.load())
        assert await rig.plan_backfills() == set(range(settings.partitions))
        for p in range(settings.partitions):
            await rig.backfill_step(p, now, chunk=10)  # part of each partition scanned
        assert all(plan.cursor != 0 for plan in engine.backfill.plans.values())
        live = [order(c, 2, "20") for c in customers[::2]]  # half of them cross the line
        await rig.process(records(settings, live, offsets), now)
        assert engine.stats.applied_during_backfill == len(live)
        while engine.backfill.plans:
            for p in list(engine.backfill.plans):
                await rig.backfill_step(p, now, chunk=10)
        membership = await read_topic(settings, topics.membership, len(live))
    per_customer: dict[str, list[tuple[str, str]]] = {}
    for c in changes(membership):
        per_customer.setdefault(c["customer_id"], []).append((c["type"], c["reason"]))
    assert per_customer == {c: [("segment.member_added", "event")] for c in customers[::2]}
    assert await members(settings, redis_client, "big") == set(customers[::2])


async def test_a_partition_without_stored_customers_is_marked_backfilled_without_a_backfill(
    settings: Settings, redis_client: Redis
):
    """A first start with segments already defined: the empty partitions plan no backfill
    (whose step would close the first batch's commit group), and record the definitions they
    match at once; a partition holding customers still backfills them."""
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client) as rig:
        engine = rig.engine
        now = int(time.time() * 1000)
        customer = "c-only"
        held = owner_partition(customer, settings.partitions)
        await rig.process(records(settings, [order(customer, 1, "150")], {}), now)
        await definitions.put("big", BIG_SPENDERS)
        engine.set_definitions(await definitions.load())
        fingerprint = engine.definitions.fingerprint()
        assert await rig.plan_backfills() == {held}
        assert set(engine.backfill.plans) == {held}
        backfilled = await rig.store.backfilled(settings.partitions)
        assert [p for p in range(settings.partitions) if backfilled[p] == {fingerprint}] == [
            p for p in range(settings.partitions) if p != held]
        while engine.backfill.plans:
            await rig.backfill_step(held, now)
        assert await members(settings, redis_client, "big") == {customer}
        assert await rig.store.backfilled(settings.partitions) == [
            frozenset({fingerprint})] * settings.partitions


async def test_a_backfill_step_inside_an_open_group_sees_its_uncommitted_changes(
    settings: Settings, redis_client: Redis
):
    """A backfill step shares the open commit group with live batches: a customer deleted in
    that group, not committed yet, is not brought back from the stored state, and a customer
    the step loads from Redis and flips is the one the next live event changes."""
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client) as rig:
        engine = rig.engine
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        await rig.process(records(settings, [
            order("c-gone", 1, "150"), order("c-late", 1, "150"), order("c-small", 1, "90"),
        ], offsets), now)
        engine.cache.forget(engine.owned)  # the backfill reads these from Redis
        await definitions.put("big", BIG_SPENDERS)
        engine.set_definitions(await definitions.load())
        planned = await rig.plan_backfills()
        deleted = event("customer.deleted", "c-gone", "c-gone-deleted")
        await rig.apply(records(settings, [deleted], offsets), now + 1)
        for p in planned:
            await engine.backfill.step(p, now + 2, 2000, rig.checkpoint)
        await rig.apply(records(settings, [order("c-late", 2, "10")], offsets), now + 3)
        await rig.checkpoint.drain()
        assert not engine.backfill.plans

    assert await members(settings, redis_client, "big") == {"c-late"}
    assert await state_of(settings, redis_client, "c-gone") is None
    late = await state_of(settings, redis_client, "c-late")
    assert (late.order_count, late.total_spent) == (2, 160 * 10_000)
    sent = changes(await read_topic(settings, topics.membership, 1))
    assert [(c["customer_id"], c["type"], c["reason"]) for c in sent] == [
        ("c-late", "segment.member_added", "backfill")]
