"""Commit groups: under a backlog several batches share one Redis commit.

What a user must not notice: the state, memberships, counts and offsets in Redis, and the
membership records on the topic, are the same as with one commit per batch; nothing of a group
reaches Redis before the batch that closes it; a batch that fails drops its open group unsaved.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from segments.features import decode_state
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.state import StateStore
from tests.streams.helpers import (
    BIG_SPENDERS,
    changes,
    create_topics,
    engine_on,
    event,
    members,
    order,
    produce,
    read_topic,
    records,
    running_processor,
    wait_for,
)

REPEAT_BUYERS = {"name": "Three orders or more", "groups": [{"conditions": [
    {"field": "order_count", "op": "gte", "value": 3}]}]}


async def _redis_content(redis: Redis, settings: Settings) -> dict[str, Any]:
    """Every hash the engine writes, per partition, as a user of Redis would read it (offsets
    without the run's topic prefix, counts without zeros)."""
    store = StateStore(redis, settings.key_prefix)
    prefix = settings.topic_prefix.encode()
    content: dict[str, Any] = {}
    for p in range(settings.partitions):
        keys = store.keys(p)
        states = await redis.hgetall(keys.state)
        content[f"{p}:state"] = {c: decode_state(blob) for c, blob in states.items()}
        offsets = await redis.hgetall(keys.offsets)
        content[f"{p}:offsets"] = {k.removeprefix(prefix): v for k, v in offsets.items()}
        content[f"{p}:masks"] = await redis.hgetall(keys.masks)
        # a count back to 0 is the same count as none: a +1 and a -1 in one commit write
        # nothing, in two commits they leave "0" (member counts read both as 0)
        counts = await redis.hgetall(keys.counts)
        content[f"{p}:counts"] = {k: v for k, v in counts.items() if int(v) != 0}
    return content


async def test_a_group_reaches_redis_only_with_the_batch_that_closes_it(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    store = StateStore(redis_client, settings.key_prefix)
    customers = [f"c-group{n}" for n in range(30)]
    first = customers[0]
    offsets: dict[tuple[str, int], int] = {}
    now = int(time.time() * 1000)
    async with engine_on(settings, redis_client) as rig:
        for n in (1, 2):
            batch = records(settings, [order(c, n, "60") for c in customers], offsets)
            await rig.batch(batch, now + n, close=False)
        await rig.checkpoint.settle()
        # two batches applied and their records sent; Redis has none of it yet
        assert rig.checkpoint.is_open
        assert await store.load_states(owner_partition(first, settings.partitions),
                                       [first]) == [None]
        assert await members(settings, redis_client, "big") == set()
        sent = changes(await read_topic(settings, topics.membership, len(customers)))
        assert {c["customer_id"] for c in sent} == set(customers)

        batch = records(settings, [order(c, 3, "60") for c in customers], offsets)
        await rig.process(batch, now + 3)  # closes the group
        assert not rig.checkpoint.is_open
        assert (rig.engine.stats.batches, rig.checkpoint.commits) == (3, 1)

    for customer_id in customers:
        [blob] = await store.load_states(owner_partition(customer_id, settings.partitions),
                                         [customer_id])
        assert blob is not None
        assert decode_state(blob).order_count == 3, customer_id
    assert await members(settings, redis_client, "big") == set(customers)
    stored = [await store.load_offsets(p) for p in range(settings.partitions)]
    assert sum(o for per_p in stored for o in per_p.values()) == 3 * len(customers)


async def test_a_batch_that_fails_drops_its_open_group_and_the_replay_is_exact(
    settings: Settings, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_topics(settings)
    store = StateStore(redis_client, settings.key_prefix)
    customers = [f"c-fail{n}" for n in range(20)]
    now = int(time.time() * 1000)
    async with engine_on(settings, redis_client) as rig:
        offsets: dict[tuple[str, int], int] = {}
        first = records(settings, [order(c, 1, "10") for c in customers], offsets)
        second = records(settings, [order(c, 2, "10") for c in customers], offsets)
        await rig.batch(first, now, close=False)
        await rig.checkpoint.settle()

        async def redis_gone(*_: Any) -> Any:
            raise ConnectionError("Redis went away")

        monkeypatch.setattr(rig.store, "load_states", redis_gone)
        rig.engine.cache.forget(rig.engine.owned)  # the next batch must load from Redis
        with pytest.raises(ConnectionError):
            await rig.apply(second, now + 1)
        assert not rig.checkpoint.is_open  # dropped: it would commit offsets past unapplied events
        monkeypatch.undo()

        # the processor replays both batches from the offsets in Redis (none): each once
        await rig.process(first, now + 2)
        await rig.process(second, now + 3)
    for customer_id in customers:
        [blob] = await store.load_states(owner_partition(customer_id, settings.partitions),
                                         [customer_id])
        assert blob is not None and decode_state(blob).order_count == 2, customer_id


_KINDS = st.sampled_from(["order", "order", "order", "refund", "delete", "repeat"])


@hyp_settings(max_examples=25, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(st.tuples(st.integers(0, 5), _KINDS, st.integers(5, 400)),
                   min_size=1, max_size=40),
    cuts=st.lists(st.tuples(st.integers(1, 8), st.booleans()), min_size=1, max_size=12),
)
async def test_grouped_commits_leave_redis_and_the_topic_as_batch_commits_do(
    settings: Settings, redis_client: Redis, steps: list[tuple[int, str, int]],
    cuts: list[tuple[int, bool]],
) -> None:
    """The same events cut into the same batches, committed per batch (reference) and with
    random batches leaving their group open and applied in chunks of two events: Redis content
    and membership records agree."""
    run = f"{time.monotonic_ns()}"
    grouped = settings.with_changes(topic_prefix=f"{settings.topic_prefix}g{run}.",
                      key_prefix=f"{settings.key_prefix}:g{run}")
    plain = settings.with_changes(topic_prefix=f"{settings.topic_prefix}p{run}.",
                    key_prefix=f"{settings.key_prefix}:p{run}")
    events: list[dict[str, Any]] = []
    for n, (who, kind, amount) in enumerate(steps):
        customer_id = f"c-prop{who}"
        if kind == "order":
            events.append(order(customer_id, n, str(amount)))
        elif kind == "refund":
            events.append(event("order.refunded", customer_id, f"{customer_id}-r{n}",
                                {"order_id": f"{customer_id}-order-{n - 1}",
                                 "amount": str(amount)}))
        elif kind == "delete":
            events.append(event("customer.deleted", customer_id, f"{customer_id}-d{n}"))
        elif events:
            events.append(events[-1])  # a repeated event id changes nothing
    batches: list[tuple[list[dict[str, Any]], bool]] = []
    rest, i = events, 0
    while rest:
        size, close = cuts[i % len(cuts)]
        batches.append((rest[:size], close))
        rest, i = rest[size:], i + 1
    now = int(time.time() * 1000)
    outcomes = []
    for run_settings, grouping in ((plain, False), (grouped, True)):
        await create_topics(run_settings)
        definitions = DefinitionStore(redis_client, run_settings.key_prefix)
        await definitions.put("big", BIG_SPENDERS)
        await definitions.put("repeat", REPEAT_BUYERS)
        offsets: dict[tuple[str, int], int] = {}
        async with engine_on(run_settings, redis_client, cache_size=4) as rig:
            if grouping:  # and the event loop turns within batches, as in large ones
                rig.engine.apply_chunk = 2
            for n, (chunk, close) in enumerate(batches):
                batch = records(run_settings, chunk, offsets)
                await rig.batch(batch, now + n, close=close or not grouping)
            await rig.checkpoint.drain()
            sent = rig.engine.stats.added + rig.engine.stats.removed
        topic = TopicNames(run_settings.topic_prefix).membership
        records_sent = changes(await read_topic(run_settings, topic, sent)) if sent else []
        outcomes.append((await _redis_content(redis_client, run_settings),
                         sorted((c["event_id"], c["type"]) for c in records_sent)))
    assert outcomes[0] == outcomes[1]


async def test_a_processor_under_backlog_commits_everything_once_caught_up(
    settings: Settings, redis_client: Redis
) -> None:
    """Every batch may leave its group open, and no group grows full: the empty fetch after
    the backlog closes it, with no more events needed."""
    settings = settings.with_changes(commit_group_from=1, commit_group_max=10**9, batch_max=50)
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("big", BIG_SPENDERS)
    store = StateStore(redis_client, settings.key_prefix)
    customers = [f"c-backlog{n}" for n in range(100)]
    async with running_processor(settings, redis_client):
        await produce(settings, [order(c, n, "40") for n in range(3) for c in customers])

        async def all_committed() -> bool:
            return await members(settings, redis_client, "big") == set(customers)

        await wait_for(all_committed, timeout=30, what="the backlog's commit")
    for customer_id in customers:
        [blob] = await store.load_states(owner_partition(customer_id, settings.partitions),
                                         [customer_id])
        assert blob is not None and decode_state(blob).order_count == 3, customer_id
