"""The batched output on the real broker: overlapping sends keep each partition's order."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker.topics import TopicNames
from streams.engine.output import BatchProducer
from streams.settings import Settings
from tests.streams.helpers import create_topics, read_topic

SENDS = 12
PER_PARTITION = 40


@pytest.mark.parametrize("batch_size", [1 << 20, 256], ids=["one-batch", "several-batches"])
async def test_overlapping_sends_keep_each_partitions_order(
    settings: Settings, batch_size: int
) -> None:
    """The processor sends batch N+1 while batch N still waits for its acks. A subscriber must
    still see N's changes of a customer before N+1's, even when the two batches list their
    partitions in different orders (the producer's per-partition waits then end crosswise), and
    when a send holds several Kafka batches per partition (handed over round by round)."""
    await create_topics(settings)
    topic = TopicNames(settings.topic_prefix).membership
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                max_batch_size=batch_size)
    await producer.start()
    try:
        output = BatchProducer(producer)
        await output.partitions_of(topic)
        sends = []
        for n in range(SENDS):
            for partition in ((0, 1) if n % 2 == 0 else (1, 0)):
                for i in range(PER_PARTITION):
                    output.add(topic, partition, None, f"{n}:{i}".encode())
            sends.append(asyncio.ensure_future(output.send(output.detach())))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    records = await read_topic(settings, topic, SENDS * PER_PARTITION * 2)
    expected = [f"{n}:{i}" for n in range(SENDS) for i in range(PER_PARTITION)]
    for partition in (0, 1):
        values = [r.value.decode() for r in records if r.partition == partition]
        assert values == expected, f"partition {partition}"
