"""Test helpers that drive the real broker and Redis: produce, read topics, run a processor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from segments.events import TOPIC_OF_TYPE
from segments.features import decode_state, encode_state, new_state
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames, ensure_topics, partition_counts
from streams.engine.checkpoint import Checkpoint, GroupPolicy
from streams.engine.engine import Engine
from streams.engine.output import BatchProducer
from streams.engine.processor import Processor
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.state import PartitionWrite, StateStore


def event(
    kind: str, customer_id: str, event_id: str, data: dict[str, Any] | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id, "type": kind, "customer_id": customer_id, "data": data or {},
        "occurred_at": at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


async def produce(
    settings: Settings,
    events: Iterable[dict[str, Any] | tuple[str, bytes]],
    partition: Callable[[dict[str, Any]], int | None] | None = None,
) -> None:
    """Send events to their topics (raw `(topic, bytes)` pairs go as they are)."""
    assert settings.kafka_bootstrap
    topics = TopicNames(settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    try:
        futures = []
        for item in events:
            if isinstance(item, tuple):
                topic_name, value = item
                futures.append(await producer.send(getattr(topics, topic_name), value, key=b"k"))
                continue
            topic = getattr(topics, TOPIC_OF_TYPE[item["type"]])
            p = partition(item) if partition else None
            futures.append(await producer.send(
                topic, orjson.dumps(item), key=item["customer_id"].encode(), partition=p
            ))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(
    settings: Settings, topic: str, count: int, timeout: float = 20.0
) -> list[Any]:
    """Read at least `count` records of a whole topic from the beginning (or fail on timeout)."""
    assert settings.kafka_bootstrap
    counts = await partition_counts(settings.kafka_bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(counts[topic])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
        # drain anything else already there, so callers can assert on exact contents
        while True:
            batch = await consumer.getmany(timeout_ms=300)
            if not batch:
                break
            for rs in batch.values():
                records.extend(rs)
    finally:
        await consumer.stop()
    assert len(records) >= count, f"expected {count} records on {topic}, got {len(records)}"
    return records


def changes(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.asynccontextmanager
async def running_processor(settings: Settings, redis: Redis) -> AsyncIterator[Processor]:
    processor = Processor(settings, redis)
    task = asyncio.create_task(processor.run())
    try:
        await wait_for(owns_partitions(processor, task), timeout=60,
                       what="processor to own partitions")
        yield processor
    finally:
        processor.stop()
        await task


def owns_partitions(processor: Processor, task: asyncio.Task[None]
                    ) -> Callable[[], Awaitable[bool]]:
    """A check for `wait_for`: the processor owns partitions (its task's error, if it ended)."""
    async def check() -> bool:
        if task.done():
            task.result()
        engine = processor.engine
        return processor.ready.is_set() and engine is not None and bool(engine.owned)
    return check


async def define(settings: Settings, redis: Redis, segment_id: str, body: dict[str, Any]) -> None:
    await DefinitionStore(redis, settings.key_prefix).put(segment_id, body)


async def create_topics(settings: Settings) -> None:
    assert settings.kafka_bootstrap
    await ensure_topics(settings.kafka_bootstrap, TopicNames(settings.topic_prefix),
                        settings.partitions, settings.replication_factor)


async def state_of(settings: Settings, redis: Redis, customer_id: str) -> Any:
    from streams.broker.partitioning import owner_partition
    from streams.storage.state import PartitionKeys

    p = owner_partition(customer_id, settings.partitions)
    blob = await redis.hget(PartitionKeys(settings.key_prefix, p).state, customer_id)
    return None if blob is None else decode_state(blob)


async def slot_of(redis: Redis, key_prefix: str, segment_id: str) -> int:
    """The membership bit of a segment, live or deleted (tombstone)."""
    current = await DefinitionStore(redis, key_prefix).load()
    if segment_id in current.live:
        return current.live[segment_id].slot
    return next(slot for slot, (dead, _) in current.tombstones.items() if dead == segment_id)


async def members(settings: Settings, redis: Redis, segment_id: str) -> set[str]:
    """Members of a segment in the processor's Redis state (all partitions), checked against
    the segment's stored count. Masks and counts are read one after the other, so while a
    processor runs a commit can land in between: only a mismatch that persists fails."""
    store = StateStore(redis, settings.key_prefix)
    slot = await slot_of(redis, settings.key_prefix, segment_id)
    for _ in range(50):
        found: set[str] = set()
        for p in range(settings.partitions):
            found.update(await store.members(p, slot))
        counted = await store.member_count(settings.partitions, segment_id)
        if counted == len(found):
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{segment_id}: count {counted}, members {len(found)}")


def role_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a `segstream` role subprocess use these settings."""
    env = {**os.environ,
           "SEGSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
           "SEGSTREAM_REDIS_URL": settings.redis_url or "",
           "SEGSTREAM_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
           "SEGSTREAM_TOPIC_PREFIX": settings.topic_prefix,
           "SEGSTREAM_KEY_PREFIX": settings.key_prefix,
           "SEGSTREAM_GROUP_ID": settings.group_id,
           "SEGSTREAM_PARTITIONS": str(settings.partitions),
           # every role serves /health and /metrics: a port of its own, so roles run side by side
           "SEGSTREAM_HTTP_PORT": "0"}
    return env | extra


async def seed_member(redis: Redis, key_prefix: str, partition: int, slot: int, segment_id: str,
                      customer_id: str, email: str | None = None) -> None:
    """A member as the processor stores it: the state (with email and mask), the mask, the
    count; through the store's own commit."""
    store = StateStore(redis, key_prefix)
    blobs = await store.load_states(partition, [customer_id])
    state = new_state() if blobs[0] is None else decode_state(blobs[0])
    state.email = email
    if state.segments_mask >> slot & 1:
        return
    state.segments_mask |= 1 << slot
    write = PartitionWrite()
    write.put_state(customer_id, encode_state(state))
    write.set_mask(customer_id, state.segments_mask)
    write.count(segment_id, 1)
    await store.commit(partition, write)


@dataclass
class Rec:
    """A consumed record, as the engine reads it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 0


def records(settings: Settings, events: list[dict[str, Any]],
            offsets: dict[tuple[str, int], int]) -> list[Rec]:
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


class GatedStore(StateStore):
    """The real store, whose commits wait while `gate` is clear (commits held in flight)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, prefix)
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit_many(self, writes: Mapping[int, PartitionWrite]) -> None:
        await self.gate.wait()
        await super().commit_many(writes)


@dataclass
class EngineRig:
    """An engine and its checkpoint owning every partition, driven step by step as the
    processor drives them, for tests that need to stop between the steps."""

    engine: Engine
    checkpoint: Checkpoint
    store: GatedStore

    async def apply(self, batch: list[Rec], now_ms: int) -> None:
        """Prepare a batch into the open group; its records wait in the output."""
        self.checkpoint.begin(len(batch), now_ms)
        await self.engine.prepare(batch, now_ms, self.checkpoint)
        positions: dict[tuple[str, int], int] = {}
        for r in batch:
            positions[(r.topic, r.partition)] = r.offset + 1
        self.checkpoint.advance(positions)

    async def batch(self, batch: list[Rec], now_ms: int, close: bool = True) -> None:
        """Apply, then hand over: the records are sent, and with `close` the group's commit
        is queued (it runs in the background)."""
        await self.apply(batch, now_ms)
        await self.checkpoint.hand_over(close)

    async def process(self, batch: list[Rec], now_ms: int) -> None:
        """One batch, sent and committed."""
        await self.batch(batch, now_ms, close=True)
        await self.checkpoint.settle()

    async def plan_backfills(self) -> set[int]:
        """Plan a backfill of every partition (marks committed); the partitions planned."""
        planned = {p for p in sorted(self.engine.owned)
                   if await self.engine.backfill.plan(p, self.checkpoint)}
        await self.checkpoint.drain()
        return planned

    async def fire_timers(self, now_ms: int) -> int:
        """Fire the due timers of every partition, sent and committed; how many fired."""
        fired = await self.engine.timers.fire_due(self.engine.owned, now_ms, self.checkpoint)
        await self.checkpoint.drain()
        return fired

    async def backfill_step(self, partition: int, now_ms: int, chunk: int = 2000) -> int:
        """One backfill step of `partition`, sent and committed; the changes it emitted."""
        flips = await self.engine.backfill.step(partition, now_ms, chunk, self.checkpoint)
        await self.checkpoint.drain()
        return flips


@contextlib.asynccontextmanager
async def engine_on(settings: Settings, redis: Redis, cache_size: int = 200_000,
                    policy: GroupPolicy | None = None) -> AsyncIterator[EngineRig]:
    """An engine owning every partition, with the current definitions, a real producer and a
    checkpoint (for tests that drive the steps themselves instead of running a processor)."""
    topics = TopicNames(settings.topic_prefix)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        output = BatchProducer(producer)
        for topic in (topics.membership, topics.dlq, topics.repartition):
            await output.partitions_of(topic)
        store = GatedStore(redis, settings.key_prefix)
        engine = Engine(store, output, topics, settings.partitions,
                        await DefinitionStore(redis, settings.key_prefix).load(),
                        cache_size=cache_size)
        for p in range(settings.partitions):
            engine.own(p)
        checkpoint = Checkpoint(store, output, policy or GroupPolicy(), schedule=engine.schedule)
        yield EngineRig(engine, checkpoint, store)
    finally:
        await producer.stop()


BIG_SPENDERS = {"name": "Big spenders", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 100}]}]}


def order(customer_id: str, n: int, total: str, products: list[str] | None = None
          ) -> dict[str, Any]:
    items = [{"product_id": p, "category": "c", "quantity": 1, "price": total}
             for p in (products or [])]
    return event("order.placed", customer_id, f"{customer_id}-o{n}",
                 {"order_id": f"{customer_id}-order-{n}", "total": total, "products": items})
