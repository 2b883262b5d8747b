"""`segstream lag --watch`: each partition's trend as its lag grows, then shrinks; the command
refreshing its table until it is told to stop."""

from __future__ import annotations

import asyncio
import itertools
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from rich.console import Console

from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.ops.lag import LagReader, groups_and_topics
from streams.ops.lag_watch import LagWatch, Watched, lag_table
from streams.settings import Settings
from tests.streams.helpers import create_topics, order, produce, role_env


def _orders_row(rows: list[Watched], topics: TopicNames, partition: int) -> Watched:
    return next(w for w in rows if w.row.topic == topics.orders and w.row.partition == partition)


async def _commit(settings: Settings, tp: TopicPartition, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                group_id=settings.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_the_trend_follows_a_partition_falling_behind_then_catching_up(
    settings: Settings,
) -> None:
    await create_topics(settings)
    topics = TopicNames(settings.topic_prefix)
    seconds = itertools.count(0, 2)  # each reading two seconds after the one before
    async with LagReader(settings.kafka_bootstrap or "", groups_and_topics(
            topics, settings.group_id)) as reader:
        lag_watch = LagWatch(reader, clock=lambda: float(next(seconds)))
        first = _orders_row(await lag_watch.refresh(5.0), topics, 0)
        assert (first.row.lag, first.trend.direction) == (0, "steady")

        await produce(settings, [order(f"c-{n}", 1, "10") for n in range(10)], lambda _: 0)
        behind = _orders_row(await lag_watch.refresh(5.0), topics, 0)
        assert behind.row.lag == 10 and behind.row.time_lag_seconds is not None
        assert (behind.trend.direction, behind.trend.rate) == ("growing", 5.0)
        assert _orders_row(lag_watch.rows, topics, 1).trend.direction == "steady"

        await _commit(settings, TopicPartition(topics.orders, 0), 10)
        caught_up = _orders_row(await lag_watch.refresh(5.0), topics, 0)
        assert caught_up.row.lag == 0 and caught_up.row.time_lag_seconds == 0
        assert (caught_up.trend.direction, caught_up.trend.rate) == ("shrinking", -5.0)

    console = Console(width=200, record=True)
    console.print(lag_table(lag_watch.rows))
    shown = console.export_text()
    assert "trend" in shown and "shrinking" in shown and topics.orders in shown


async def test_lag_watch_refreshes_the_table_and_stops_when_told(settings: Settings) -> None:
    await create_topics(settings)
    customer = next(f"c-{n}" for n in itertools.count()
                    if owner_partition(f"c-{n}", settings.partitions) == 2)
    await produce(settings, [order(customer, 1, "10")])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.cli", "lag", "--watch", "--interval", "0.2",
        "--count", "3", env=role_env(settings, COLUMNS="200"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    shown = out.decode()
    assert "trend" in shown and "time lag" in shown
    orders = [line for line in shown.splitlines()
              if f"{settings.topic_prefix}orders" in line and "│ 2 " in line]
    assert orders and "│ 1 " in orders[-1], shown  # partition 2 holds one record, not read
