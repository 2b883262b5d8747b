"""Topic names, topic creation, and the offset queries that must be right on every broker.

``customers``, ``orders`` and the internal ``segments.repartition`` topic are
co-partitioned: partition p of all three is owned by one processor, so their
partition counts must be equal (:class:`CoPartitionError` otherwise).

The offset helpers avoid two broker differences (see the embedded-broker notes):
the high watermark is read from a fetch response, because ``ListOffsets`` latest
is wrong on Tansu after batched produces, and committed offsets are read through
a consumer, because the admin client cannot decode Tansu's ``OffsetFetch`` answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.broker.connection import KafkaTarget, client_options

# How long to wait for freshly created topics to show in metadata (Kafka propagates
# them to brokers asynchronously), and for a fetch to report every high watermark.
METADATA_WAIT_S: Final = 10.0
HIGHWATER_WAIT_S: Final = 10.0


class CoPartitionError(RuntimeError):
    """Co-partitioned topics have different partition counts; processing cannot start."""


class MissingTopicsError(RuntimeError):
    """Topics that should exist are not in the cluster metadata."""


@dataclasses.dataclass(frozen=True)
class TopicNames:
    """Every topic segstream uses, each with the deployment's prefix in front."""

    prefix: str = ""

    @property
    def customers(self) -> str:
        return f"{self.prefix}customers"

    @property
    def orders(self) -> str:
        return f"{self.prefix}orders"

    @property
    def membership(self) -> str:
        return f"{self.prefix}segment-membership"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}segments.dlq"

    @property
    def repartition(self) -> str:
        """Internal: events a producer's partitioner put on a partition other than ours."""
        return f"{self.prefix}segments.repartition"

    @property
    def inputs(self) -> tuple[str, str]:
        """The topics storefront producers write to."""
        return (self.customers, self.orders)

    @property
    def co_partitioned(self) -> tuple[str, str, str]:
        """Topics whose partition p is owned by one processor: equal counts required."""
        return (self.customers, self.orders, self.repartition)

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.co_partitioned, self.membership, self.dlq)


async def ensure_topics(
    kafka: KafkaTarget, names: TopicNames, partitions: int, replication_factor: int
) -> int:
    """Create the missing topics, then check co-partitioning; return the shared count.

    Topics that exist are left as they are. Raises :class:`CoPartitionError` when
    ``customers``, ``orders`` and the repartition topic differ in partition count.
    """
    wanted = {topic: partitions for topic in names.all}
    async with _admin(kafka) as admin:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(topic, count, replication_factor)
            for topic, count in wanted.items()
            if topic not in existing
        ]
        if missing:
            _raise_creation_errors(await admin.create_topics(missing))
    counts = await _wait_for_topics(kafka, names.all)
    return check_co_partitioned(counts, names)


def check_co_partitioned(counts: Mapping[str, int], names: TopicNames) -> int:
    """The partition count shared by the co-partitioned topics, or :class:`CoPartitionError`."""
    found = {topic: counts[topic] for topic in names.co_partitioned}
    if len(set(found.values())) != 1:
        listed = ", ".join(f"{topic!r} has {count}" for topic, count in found.items())
        raise CoPartitionError(
            f"co-partitioned topics must have equal partition counts, but {listed}: "
            "partition p of each is owned by one processor, so the processor refuses "
            "to start. Give them the same number of partitions (add partitions to the "
            "smaller ones, or recreate them)."
        )
    return next(iter(found.values()))


async def partition_counts(kafka: KafkaTarget, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic that exists; topics that do not are left out.

    Reads full cluster metadata, which never auto-creates a topic (a metadata request
    naming topics may, on brokers with ``auto.create.topics.enable``).
    """
    async with _client(kafka) as client:
        metadata = await client.fetch_all_metadata()
    counts = {}
    for topic in topics:
        partitions = metadata.partitions_for_topic(topic)
        if partitions:
            counts[topic] = len(partitions)
    return counts


async def high_watermarks(
    kafka: KafkaTarget, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The high watermark (offset of the next record) of each partition, from a fetch.

    Each partition is fetched from its last record (or its start when empty) on a
    throwaway consumer; the fetch response carries the high watermark. Right on Apache
    Kafka and on Tansu, where ``end_offsets`` is not.
    """
    tps = list(dict.fromkeys(tps))
    if not tps:
        return {}
    async with _consumer(kafka, fetch_max_wait_ms=50) as consumer:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - 1, starts[tp]))
        return await _fetched_highwaters(consumer, tps)


async def _fetched_highwaters(
    consumer: Any, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HIGHWATER_WAIT_S
    while any(consumer.highwater(tp) is None for tp in tps):
        if loop.time() > deadline:
            unknown = [tp for tp in tps if consumer.highwater(tp) is None]
            raise TimeoutError(f"no fetch response for {unknown} in {HIGHWATER_WAIT_S} s")
        await consumer.getmany(*tps, timeout_ms=50)
    return {tp: int(consumer.highwater(tp)) for tp in tps}


async def committed_offsets(
    kafka: KafkaTarget, group_id: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset per partition (None where it has none).

    Uses a consumer carrying the group id but subscribed to nothing, so it never joins
    or disturbs the group.
    """
    tps = list(dict.fromkeys(tps))
    if not tps:
        return {}
    async with _consumer(kafka, group_id=group_id) as consumer:
        offsets = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
    return dict(zip(tps, offsets, strict=True))


async def cluster_id(kafka: KafkaTarget) -> str | None:
    """The cluster id from metadata (None from brokers too old to send one)."""
    async with _admin(kafka) as admin:
        description = await admin.describe_cluster()
    value = description.get("cluster_id")
    return str(value) if value is not None else None


async def _wait_for_topics(kafka: KafkaTarget, topics: Iterable[str]) -> dict[str, int]:
    topics = list(topics)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + METADATA_WAIT_S
    while True:
        counts = await partition_counts(kafka, topics)
        missing = [topic for topic in topics if topic not in counts]
        if not missing:
            return counts
        if loop.time() > deadline:
            raise MissingTopicsError(
                f"topics {missing} still missing from metadata {METADATA_WAIT_S} s "
                "after they were created"
            )
        await asyncio.sleep(0.1)


def _raise_creation_errors(response: Any) -> None:
    for topic, error_code, *rest in response.topic_errors:
        error = for_code(error_code)
        if error_code == 0 or error is TopicAlreadyExistsError:
            continue  # another process may have created it meanwhile
        message = rest[0] if rest and rest[0] else error.description
        raise error(f"cannot create topic {topic!r}: {message}")


@asynccontextmanager
async def _admin(kafka: KafkaTarget) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def _client(kafka: KafkaTarget) -> AsyncIterator[Any]:
    client = AIOKafkaClient(**client_options(kafka))
    try:
        await client.bootstrap()
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def _consumer(kafka: KafkaTarget, **options: Any) -> AsyncIterator[Any]:
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, **options)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
