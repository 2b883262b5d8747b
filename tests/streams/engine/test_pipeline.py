"""Batches prepared while the previous one is still being sent and committed (the processor's
pipeline): states stay exact even when the cache must evict."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.exceptions
from redis.asyncio import Redis

from segments.features import decode_state
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.engine.processor import Processor
from streams.settings import Settings
from streams.storage.client import redis_client as redis_client_for
from streams.storage.definitions import DefinitionStore
from streams.storage.state import CommitFenced, StateStore
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    engine_on,
    members,
    order,
    owns_partitions,
    produce,
    read_topic,
    records,
    running_processor,
    state_of,
    wait_for,
)


async def test_next_batch_prepared_before_the_last_commit_sees_the_uncommitted_states(
    settings: Settings, redis_client: Redis
):
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    store = StateStore(redis_client, settings.key_prefix)
    # a cache far too small for a batch: every prepare wants to evict
    async with engine_on(settings, redis_client, cache_size=settings.partitions) as rig:
        customers = [f"c-pipe{n}" for n in range(40)]
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        await rig.apply(records(settings, [order(c, 1, "300") for c in customers], offsets), now)
        # batch 2 is prepared while batch 1 is neither sent nor committed
        await rig.apply(
            records(settings, [order(c, 2, "300") for c in customers], offsets), now + 1)
        assert await store.load_states(owner_partition(customers[0], settings.partitions),
                                       [customers[0]]) == [None]
        await rig.checkpoint.drain()

    for customer_id in customers:
        p = owner_partition(customer_id, settings.partitions)
        [blob] = await store.load_states(p, [customer_id])
        assert blob is not None
        state = decode_state(blob)
        assert (state.order_count, state.total_spent) == (2, 600 * 10_000), customer_id
    assert await members(settings, redis_client, "big") == set(customers)
    added = [c for c in changes(await read_topic(settings, topics.membership, len(customers)))
             if c["type"] == "segment.member_added"]
    assert sorted(c["customer_id"] for c in added) == sorted(customers)


async def test_a_batch_prepared_two_commits_ahead_sees_the_states_of_both(
    settings: Settings, redis_client: Redis
):
    """The processor prepares a batch while the two before it are being sent and committed: a
    customer of the first, evicted from the cache while the second was prepared, would be read
    back from Redis without the first batch's order."""
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    store = StateStore(redis_client, settings.key_prefix)
    async with engine_on(settings, redis_client, cache_size=settings.partitions) as rig:
        early = [f"c-early{n}" for n in range(30)]
        other = [f"c-other{n}" for n in range(30)]
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        rig.store.gate.clear()  # the commits of the first two batches wait
        await rig.batch(records(settings, [order(c, 1, "300") for c in early], offsets), now)
        await rig.batch(records(settings, [order(c, 1, "300") for c in other], offsets), now + 1)
        await rig.apply(records(settings, [order(c, 2, "300") for c in early], offsets), now + 2)
        assert await store.load_states(owner_partition(early[0], settings.partitions),
                                       [early[0]]) == [None]
        rig.store.gate.set()
        await rig.checkpoint.drain()
        assert rig.checkpoint.idle
        # with nothing left to commit, the next batch trims every cache to its share (one)
        await rig.process(records(settings, [order("c-late", 1, "300")], offsets), now + 3)
        assert [len(c) for c in rig.engine.cache.partitions.values()] == [1] * settings.partitions

    for customer_id in early:
        [blob] = await store.load_states(owner_partition(customer_id, settings.partitions),
                                         [customer_id])
        assert blob is not None
        state = decode_state(blob)
        assert (state.order_count, state.total_spent) == (2, 600 * 10_000), customer_id
    assert await members(settings, redis_client, "big") == {*early, *other, "c-late"}


async def test_a_batch_is_sent_while_a_large_one_after_it_is_prepared(
    settings: Settings, redis_client: Redis
):
    """Under a backlog the processor prepares batches of thousands of events, CPU-bound, while
    the batch before goes out: the event loop must turn during the preparation, or the
    producer sends nothing until it ends."""
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    customers = [f"c-turn{n}" for n in range(20)]
    async with engine_on(settings, redis_client) as rig:
        rig.engine.apply_chunk = 200
        offsets: dict[tuple[str, int], int] = {}
        now = int(time.time() * 1000)
        await rig.batch(records(settings, [order(c, 0, "300") for c in customers], offsets), now,
                        close=False)
        sending = rig.checkpoint.finishing
        assert sending is not None and not sending.done()
        # the customers are cached: preparing the large batch awaits no I/O of its own
        large = [order(c, n, "10") for n in range(1, 401) for c in customers]
        await rig.apply(records(settings, large, offsets), now + 1)
        assert sending.done(), "the first batch's records were not sent during the second's"
        await rig.checkpoint.drain()
    assert await members(settings, redis_client, "big") == set(customers)
    state = await state_of(settings, redis_client, customers[0])
    assert state.order_count == 401


@pytest.mark.single_redis
async def test_next_batch_is_sent_while_the_last_commit_is_still_pending(
    settings: Settings, redis_client: Redis
):
    """A membership change waits for the broker only, not for the commits of the batches before
    it: with Redis holding every write, the changes of the next two batches still reach the
    topic, and nothing is lost once the writes resume."""
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)

    async def added(count: int) -> list[str]:
        return [c["customer_id"] for c in changes(await read_topic(
            settings, topics.membership, count, timeout=10)) if c["type"] == "segment.member_added"]

    async with running_processor(settings, redis_client):
        await produce(settings, [order("c-warm", 1, "300")])
        assert await added(1) == ["c-warm"]
        await redis_client.execute_command("CLIENT", "PAUSE", 15_000, "WRITE")
        try:
            await produce(settings, [order("c-held", 1, "300")])  # batch N: its commit waits
            await asyncio.sleep(1.0)  # batch N is sent and waiting for Redis
            await produce(settings, [order("c-next", 1, "300")])  # batch N+1
            await asyncio.sleep(1.0)
            await produce(settings, [order("c-third", 1, "300")])  # batch N+2
            assert sorted(await added(4)) == ["c-held", "c-next", "c-third", "c-warm"]
            # the three changes are out while no batch of them is committed
            for customer_id in ("c-held", "c-next", "c-third"):
                assert await state_of(settings, redis_client, customer_id) is None, customer_id
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")
        await wait_for(lambda: _stored(settings, redis_client, ["c-held", "c-next", "c-third"]),
                       what="the three held batches committed")
    assert await members(settings, redis_client, "big") == {
        "c-warm", "c-held", "c-next", "c-third"}
    for customer_id in ("c-held", "c-next", "c-third"):
        state = await state_of(settings, redis_client, customer_id)
        assert state.order_count == 1, customer_id


async def _stored(settings: Settings, redis: Redis, customer_ids: list[str]) -> bool:
    return all([await state_of(settings, redis, c) is not None for c in customer_ids])


@pytest.mark.single_redis
async def test_a_redis_that_stops_answering_stops_the_processor_and_loses_nothing(
    settings: Settings, redis_client: Redis
):
    """A commit that Redis never answers must end the processor with the error, whichever of
    the batches in flight it belongs to, not leave it waiting; its restart applies the held
    event exactly once and re-sends its change with the same id."""
    settings = settings.with_changes(session_timeout_ms=3000)  # the rejoin waits for the old member
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    assert settings.redis_url
    async with redis_client_for(settings.redis_url, cluster=settings.redis_cluster,
                                socket_timeout=1.0) as impatient:
        processor = Processor(settings, impatient)
        task = asyncio.create_task(processor.run())
        try:
            await wait_for(owns_partitions(processor, task), timeout=60,
                           what="processor to own partitions")
            await redis_client.execute_command("CLIENT", "PAUSE", 4_000, "WRITE")
            await produce(settings, [order("c-stuck", 1, "300")])
            done, _ = await asyncio.wait({task}, timeout=30)
            assert done, "the processor kept waiting for a Redis that does not answer"
            with pytest.raises(redis.exceptions.TimeoutError):
                task.result()
        finally:
            await redis_client.execute_command("CLIENT", "UNPAUSE")
            processor.stop()
            if not task.done():
                await task

    assert await state_of(settings, redis_client, "c-stuck") is None  # never committed
    async with running_processor(settings, redis_client):
        await wait_for(lambda: _stored(settings, redis_client, ["c-stuck"]),
                       what="the held event applied after the restart")
    state = await state_of(settings, redis_client, "c-stuck")
    assert state.order_count == 1
    assert await members(settings, redis_client, "big") == {"c-stuck"}
    sent = changes(await read_topic(settings, topics.membership, 2))
    assert {c["event_id"] for c in sent} == {sent[0]["event_id"]}  # the same change, twice



async def test_a_processor_that_lost_its_partition_cannot_commit_over_the_new_owner(
    settings: Settings, redis_client: Redis
):
    """A rebalance moved the partition while the old owner still had a batch to commit (a
    long pause, a network split): the new owner's claim fences the old owner's commits."""
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    p = owner_partition("c-zombie", settings.partitions)
    offsets: dict[tuple[str, int], int] = {}
    now = int(time.time() * 1000)
    async with engine_on(settings, redis_client) as old, engine_on(settings, redis_client) as new:
        await old.checkpoint.claim(p)
        await old.process(records(settings, [order("c-zombie", 1, "150")], offsets), now)
        await new.checkpoint.claim(p)
        with pytest.raises(CommitFenced):
            await old.process(records(settings, [order("c-zombie", 2, "150")], offsets), now + 1)
    state = await state_of(settings, redis_client, "c-zombie")
    assert state.order_count == 1
