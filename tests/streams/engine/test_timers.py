"""Timers: memberships that change with time alone, fired by the partition's owner.

The engine is driven step by step on the real broker and Redis with a controlled `now`; the
end-to-end tests in `test_freshness.py` wait for the wall clock instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis

from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.helpers import (
    changes,
    create_topics,
    engine_on,
    event,
    members,
    order,
    read_topic,
    records,
)

DAY = 86_400_000
RECENT = {"name": "Ordered within 30 days", "groups": [{"conditions": [
    {"field": "last_order_at", "op": "within_last", "value": {"days": 30}}]}]}
LAPSED = {"name": "No order in 30 days", "groups": [{"conditions": [
    {"field": "last_order_at", "op": "not_within_last", "value": {"days": 30}}]}]}
WIN_BACK = {"name": "Lapsed, built on lapsed", "groups": [{"conditions": [
    {"field": "segments", "op": "includes_any", "value": ["lapsed"]}]}]}


def at_iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


async def define_all(settings: Settings, redis: Redis) -> None:
    definitions = DefinitionStore(redis, settings.key_prefix)
    await definitions.put("recent", RECENT)
    await definitions.put("lapsed", LAPSED)
    await definitions.put("win-back", WIN_BACK)


async def test_a_due_timer_flips_memberships_with_reason_time_and_then_goes(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await define_all(settings, redis_client)
    topics = TopicNames(settings.topic_prefix)
    now = int(time.time() * 1000)
    bought = now - 30 * DAY + 5_000
    customer = "c-timer"
    p = owner_partition(customer, settings.partitions)
    async with engine_on(settings, redis_client) as rig:
        await rig.process(records(settings, [
            event("order.placed", customer, "o1", {"order_id": "o1", "total": "10"},
                  at=at_iso(bought))], {}), now)
        assert await rig.store.timer_of(p, customer) == bought + 30 * DAY + 1
        assert await members(settings, redis_client, "recent") == {customer}
        assert await rig.fire_timers(now + 4_000) == 0  # not due yet
        assert await rig.fire_timers(now + 6_000) == 1
        assert await rig.store.timer_of(p, customer) is None  # nothing else can change
        assert rig.engine.stats.timer_lateness_ms == 6_000 - 5_001
    assert await members(settings, redis_client, "recent") == set()
    assert await members(settings, redis_client, "lapsed") == {customer}
    assert await members(settings, redis_client, "win-back") == {customer}
    sent = changes(await read_topic(settings, topics.membership, 4))
    timed = [(c["segment_id"], c["type"]) for c in sent if c["reason"] == "time"]
    assert sorted(timed) == [("lapsed", "segment.member_added"),
                             ("recent", "segment.member_removed"),
                             ("win-back", "segment.member_added")]
    assert all("cause_event_id" not in c for c in sent if c["reason"] == "time")


async def test_a_timer_fired_twice_gives_the_same_flip_the_same_id(
    settings: Settings, redis_client: Redis
) -> None:
    """A crash after the flip was sent and before its commit: the next owner fires the same
    timer again, later, and the consumer sees the same event ids."""
    await create_topics(settings)
    await define_all(settings, redis_client)
    topics = TopicNames(settings.topic_prefix)
    now = int(time.time() * 1000)
    customer = "c-twice"
    async with engine_on(settings, redis_client) as rig:
        placed = event("order.placed", customer, "o1", {"order_id": "o1", "total": "10"},
                       at=at_iso(now - 30 * DAY - 1))
        await rig.process(records(settings, [placed], {}), now - 30 * DAY)
    async with engine_on(settings, redis_client) as crashed:
        crashed.store.gate.clear()  # the commit never happens
        assert await crashed.engine.timers.fire_due(crashed.engine.owned, now, crashed.checkpoint)
        await crashed.checkpoint.hand_over(close=True)
        await read_topic(settings, topics.membership, 1 + 3)  # the order's add, the 3 flips
        stuck = crashed.checkpoint.finishing
        assert stuck is not None and not stuck.done()  # the commit waits on the gate
        stuck.cancel()  # the process dies here: its commit never happens
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
    async with engine_on(settings, redis_client) as rig:
        assert await rig.fire_timers(now + 60_000) == 1
    sent = changes(await read_topic(settings, topics.membership, 1 + 3 + 3))
    timed = [c for c in sent if c["reason"] == "time"]
    assert len(timed) == 6 and len({c["event_id"] for c in timed}) == 3
    assert await members(settings, redis_client, "lapsed") == {customer}


async def test_events_replace_the_timer_and_a_deletion_removes_it(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await define_all(settings, redis_client)
    now = int(time.time() * 1000)
    customer = "c-moves"
    p = owner_partition(customer, settings.partitions)
    offsets: dict[tuple[str, int], int] = {}
    async with engine_on(settings, redis_client) as rig:
        await rig.process(records(settings, [order(customer, 1, "10")], offsets), now)
        first = await rig.store.timer_of(p, customer)
        assert first is not None
        profile = event("customer.updated", customer, "u1", {"first_name": "Ann"})
        await rig.process(records(settings, [profile], offsets), now + 1_000)
        assert await rig.store.timer_of(p, customer) == first  # no time field changed
        later = event("order.placed", customer, "o2", {"order_id": "o2", "total": "5"},
                      at=at_iso(now + DAY))
        await rig.process(records(settings, [later], offsets), now + DAY)
        assert await rig.store.timer_of(p, customer) == now + 31 * DAY + 1
        # the stored timer of the first order is gone: nothing fires at its instant
        assert await rig.fire_timers(first + 1) == 0
        gone = event("customer.deleted", customer, "d1")
        await rig.process(records(settings, [gone], offsets), now + DAY + 1)
        assert await rig.store.timer_of(p, customer) is None
        assert await rig.store.timer_count(settings.partitions) == 0


async def test_a_new_segment_schedules_what_its_backfill_finds(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    now = int(time.time() * 1000)
    customer = "c-backfill"
    p = owner_partition(customer, settings.partitions)
    async with engine_on(settings, redis_client) as rig:
        await rig.process(records(settings, [order(customer, 1, "10")], {}), now)
        assert await rig.store.timer_of(p, customer) is None  # no time-relative segment yet
        definitions = DefinitionStore(redis_client, settings.key_prefix)
        await definitions.put("recent", RECENT)
        rig.engine.set_definitions(await definitions.load())
        assert await rig.plan_backfills() == {p}
        while rig.engine.backfill.plans:
            await rig.backfill_step(p, now + 1)
        bought = (await rig.store.timer_of(p, customer) or 0) - 30 * DAY - 1
        assert abs(bought - now) < 60_000  # the order's time (the test's own clock)


async def test_a_window_count_leaves_when_its_orders_age_out(
    settings: Settings, redis_client: Redis
) -> None:
    """`within_days` counts are time-relative too: the timer is when the oldest order inside
    the window leaves it."""
    await create_topics(settings)
    await DefinitionStore(redis_client, settings.key_prefix).put("repeat", {
        "name": "Two orders in 7 days", "groups": [{"conditions": [
            {"field": "order_count", "op": "gte", "value": 2, "within_days": 7}]}]})
    now = int(time.time() * 1000)
    customer = "c-window"
    orders = [event("order.placed", customer, f"o{n}", {"order_id": f"o{n}", "total": "1"},
                    at=at_iso(now - days * DAY)) for n, days in enumerate((6, 1))]
    async with engine_on(settings, redis_client) as rig:
        await rig.process(records(settings, orders, {}), now)
        assert await members(settings, redis_client, "repeat") == {customer}
        assert await rig.fire_timers(now + DAY - 1_000) == 0
        assert await rig.fire_timers(now + DAY + 1_000) == 1
        assert await members(settings, redis_client, "repeat") == set()


async def test_states_loaded_to_fire_timers_leave_the_cache_once_committed(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await define_all(settings, redis_client)
    now = int(time.time() * 1000)
    customers = [f"c-many{n}" for n in range(40)]
    placed = [event("order.placed", c, f"{c}-o1", {"order_id": f"{c}-o1", "total": "1"},
                    at=at_iso(now - 30 * DAY + 1_000)) for c in customers]
    async with engine_on(settings, redis_client, cache_size=settings.partitions) as rig:
        await rig.process(records(settings, placed, {}), now)
        rig.engine.cache.forget(rig.engine.owned)
        assert await rig.fire_timers(now + 5_000) == len(customers)
        await rig.fire_timers(now + 6_000)  # nothing due; the committed states may go
        assert [len(c) for c in rig.engine.cache.partitions.values()] == [1] * settings.partitions
