"""Topic creation, co-partitioning and offset queries, against the session's real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.broker.topics import (
    CoPartitionError,
    TopicNames,
    check_co_partitioned,
    cluster_id,
    committed_offsets,
    ensure_topics,
    high_watermarks,
    partition_counts,
)
from streams.settings import Settings


def bootstrap_of(settings: Settings) -> str:
    assert settings.kafka_bootstrap is not None
    return settings.kafka_bootstrap


def test_topic_names_carry_the_prefix() -> None:
    names = TopicNames("acme.")
    assert names.customers == "acme.customers"
    assert names.orders == "acme.orders"
    assert names.membership == "acme.segment-membership"
    assert names.dlq == "acme.segments.dlq"
    assert names.repartition == "acme.segments.repartition"
    assert names.co_partitioned == ("acme.customers", "acme.orders", "acme.segments.repartition")
    assert TopicNames().customers == "customers"


def test_check_co_partitioned_names_every_count() -> None:
    names = TopicNames("x.")
    counts = {"x.customers": 8, "x.orders": 4, "x.segments.repartition": 8}
    with pytest.raises(CoPartitionError) as raised:
        check_co_partitioned(counts, names)
    message = str(raised.value)
    assert "'x.customers' has 8" in message and "'x.orders' has 4" in message
    assert "refuses to start" in message
    assert check_co_partitioned(dict.fromkeys(counts, 6), names) == 6


async def test_ensure_topics_creates_every_topic_once(settings: Settings) -> None:
    names = TopicNames(settings.topic_prefix)
    bootstrap = bootstrap_of(settings)

    assert await ensure_topics(bootstrap, names, 4, 1) == 4
    assert await ensure_topics(bootstrap, names, 4, 1) == 4  # existing topics are fine

    counts = await partition_counts(bootstrap, names.all)
    assert counts == {topic: 4 for topic in names.all}


async def test_ensure_topics_refuses_unequal_co_partitioned_topics(settings: Settings) -> None:
    names = TopicNames(settings.topic_prefix)
    bootstrap = bootstrap_of(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(names.orders, 3, 1)])
    finally:
        await admin.close()

    with pytest.raises(CoPartitionError, match=r"'[^']*orders' has 3"):
        await ensure_topics(bootstrap, names, 4, 1)


async def test_partition_counts_skips_missing_topics_without_creating_them(
    settings: Settings,
) -> None:
    bootstrap = bootstrap_of(settings)
    missing = f"{settings.topic_prefix}never-created"

    assert await partition_counts(bootstrap, [missing]) == {}
    assert await partition_counts(bootstrap, [missing]) == {}


async def test_high_watermarks_are_right_after_batched_produces(settings: Settings) -> None:
    # On Tansu, ListOffsets "latest" answers the last batch's base offset + 1 here.
    topic = f"{settings.topic_prefix}hw"
    bootstrap = bootstrap_of(settings)
    await _create(bootstrap, topic, 4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for batch_number in range(5):  # five explicit batches of 7 on partition 0
            batch = producer.create_batch()
            for i in range(7):
                batch.append(key=None, value=b"%d-%d" % (batch_number, i), timestamp=None)
            await (await producer.send_batch(batch, topic, partition=0))
        sent = [await producer.send(topic, b"v", partition=1) for _ in range(100)]
        await asyncio.gather(*sent)  # one or a few batches of 100, by the accumulator
        await producer.send_and_wait(topic, b"alone", partition=3)
    finally:
        await producer.stop()

    tps = [TopicPartition(topic, p) for p in range(4)]
    watermarks = await high_watermarks(bootstrap, tps)

    assert watermarks == {tps[0]: 35, tps[1]: 100, tps[2]: 0, tps[3]: 1}
    assert await high_watermarks(bootstrap, []) == {}


async def test_committed_offsets_reads_the_group_without_joining(settings: Settings) -> None:
    topic = f"{settings.topic_prefix}commits"
    bootstrap = bootstrap_of(settings)
    await _create(bootstrap, topic, 2)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=settings.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.commit({tps[0]: 42})
    finally:
        await consumer.stop()

    assert await committed_offsets(bootstrap, settings.group_id, tps) == {
        tps[0]: 42,
        tps[1]: None,
    }
    others = await committed_offsets(bootstrap, f"{settings.group_id}-other", tps)
    assert others == {tps[0]: None, tps[1]: None}


async def test_cluster_id_is_reported(settings: Settings) -> None:
    found = await cluster_id(bootstrap_of(settings))
    assert found
    assert await cluster_id(bootstrap_of(settings)) == found


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    await _wait_for(bootstrap, topic)


async def _wait_for(bootstrap: str, topic: str) -> None:
    for _ in range(100):  # Kafka shows a new topic in metadata a moment later
        if await partition_counts(bootstrap, [topic]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"topic {topic} did not appear")
