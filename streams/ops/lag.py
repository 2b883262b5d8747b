"""Consumer lag per group, topic and partition, in records and in time: `segstream lag`, its
`--watch`, and the lag families of `/metrics`.

`LagReader` keeps its clients for its whole life (a metadata client and one group-less consumer
per group, started on the first reading), so a scrape costs two round trips: the groups'
committed offsets (`consumer.committed()` under the group id, which never joins the group; the
admin client cannot decode the embedded broker's answer), then one fetch per leader at those
offsets that waits for nothing (`min_bytes 0`; `max_wait` 1 ms, since the embedded broker
answers a fetch with no wait at all with no partitions). A fetch answer carries the partition's high
watermark, the end (right on Apache Kafka and on the embedded broker, whose ListOffsets answer
is wrong after batched produces), and the first unprocessed record, whose timestamp gives the
time lag: how old the oldest record the group has not processed is.

`refresh(timeout)` bounds what a caller waits: a reading that takes longer (the broker is away
or frozen) goes on in the background, one at a time, and the caller is told the lag is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from streams.broker.connection import KafkaTarget, client_options
from streams.broker.topics import TopicNames

log = logging.getLogger("segstream.lag")

REQUEST_TIMEOUT_MS: Final = 5000
FETCH_BYTES: Final = 64 << 10
"""Bytes asked per partition: the broker still answers with the whole first batch when larger."""
READ_UNCOMMITTED: Final = 0
FETCH_WAIT_MS: Final = 1

Groups = Sequence[tuple[str, Sequence[str]]]


@dataclass(frozen=True)
class LagRow:
    """Lag of one consumer group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int
    time_lag_seconds: float | None = None
    """Age of the oldest record not processed (0 when caught up; None when unknown)."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def groups_and_topics(topics: TopicNames, processor_group: str) -> list[tuple[str, list[str]]]:
    """The consumer groups segstream runs and the topics each reads."""
    return [
        (processor_group, [topics.customers, topics.orders, topics.repartition]),
        (sync_group(processor_group), [topics.membership]),
    ]


def sync_group(processor_group: str) -> str:
    return f"{processor_group}-sync"


class LagReader:
    """Reads the lag of `groups` (group id, topics) with long-lived clients; see the module
    docstring."""

    def __init__(
        self, kafka: KafkaTarget, groups: Groups, clock: Callable[[], float] = time.time,
    ) -> None:
        self._options = {**client_options(kafka), "request_timeout_ms": REQUEST_TIMEOUT_MS}
        self.groups = [(group, list(topics)) for group, topics in groups]
        self._clock = clock
        self._client: AIOKafkaClient | None = None
        self._consumers: dict[str, AIOKafkaConsumer] = {}
        self._reading: asyncio.Task[list[LagRow]] | None = None
        self.rows: list[LagRow] | None = None
        """The last reading that ended in time; None when the last refresh did not."""
        self.read_at: float | None = None
        """When the last good reading ended (`clock` time)."""
        self.read_seconds: float | None = None

    async def __aenter__(self) -> LagReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, KafkaError, OSError):
                await reading
        consumers, self._consumers = list(self._consumers.values()), {}
        for consumer in consumers:
            await consumer.stop()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def refresh(self, within: float) -> bool:
        """Read the lag, waiting at most `within` seconds; whether `rows` is fresh.

        A reading still running after that is not cancelled (the next refresh waits for
        the same one); meanwhile `rows` is None: the lag is unknown, not the last one seen.
        """
        if self._reading is None:
            self._reading = asyncio.create_task(self._timed_read(), name="lag-reading")
        reading = self._reading
        done, _ = await asyncio.wait({reading}, timeout=within)
        if not done:
            self.rows = None
            return False
        self._reading = None
        error = reading.exception()
        if error is not None:
            if not isinstance(error, KafkaError | OSError | TimeoutError):
                raise error
            log.debug("lag reading failed: %r", error)
            self.rows = None
            return False
        self.rows = reading.result()
        self.read_at = self._clock()
        return True

    async def _timed_read(self) -> list[LagRow]:
        started = time.monotonic()
        rows = await self.read()
        self.read_seconds = time.monotonic() - started
        return rows

    async def read(self) -> list[LagRow]:
        """One reading of every group's partitions (topics that do not exist are left out)."""
        client = await self._started()
        tps_of = {group: self._partitions(client, topics) for group, topics in self.groups}
        if any(not tps for tps in tps_of.values()):
            await client.force_metadata_update()
            tps_of = {group: self._partitions(client, topics) for group, topics in self.groups}
        committed = dict(zip(tps_of, await asyncio.gather(*(
            self._committed(group, tps) for group, tps in tps_of.items())), strict=True))
        starts = {tp: offsets.get(tp) or 0 for offsets in committed.values() for tp in offsets}
        fetched = await _fetch_first(client, starts)
        now = self._clock()
        rows = []
        for group, tps in tps_of.items():
            for tp in tps:
                done = committed[group].get(tp)
                end, stamp = fetched.get(tp, (None, None))
                if end is None:
                    continue
                lag = max(0, end - (done or 0))
                age = 0.0 if lag == 0 else None if stamp is None else max(0.0, now - stamp / 1000)
                rows.append(LagRow(group, tp.topic, tp.partition, done, end, lag, age))
        return rows

    async def _started(self) -> AIOKafkaClient:
        if self._client is None:
            client = AIOKafkaClient(**self._options)
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            client.set_topics([t for _, topics in self.groups for t in topics])
            self._client = client
        return self._client

    @staticmethod
    def _partitions(client: AIOKafkaClient, topics: Iterable[str]) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic in topics
                for p in sorted(client.cluster.partitions_for_topic(topic) or ())]

    async def _committed(self, group: str, tps: list[TopicPartition]
                         ) -> dict[TopicPartition, int | None]:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(**self._options, group_id=group, enable_auto_commit=False)
            await consumer.start()
            self._consumers[group] = consumer
        offsets = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
        return dict(zip(tps, offsets, strict=True))


async def _fetch_first(
    client: AIOKafkaClient, starts: Mapping[TopicPartition, int]
) -> dict[TopicPartition, tuple[int, int | None]]:
    """Per partition: its high watermark, and the timestamp of its record at `starts[tp]`
    (None when there is none: caught up, or out of range)."""
    by_leader: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    for tp, offset in starts.items():
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader == -1:
            continue
        by_leader.setdefault(leader, {}).setdefault(tp.topic, []).append(
            (tp.partition, offset, FETCH_BYTES))
    answers = await asyncio.gather(*(
        client.send(leader, FetchRequest(FETCH_WAIT_MS, 0, 4 * FETCH_BYTES, READ_UNCOMMITTED,
                                         list(topics.items())))
        for leader, topics in by_leader.items()))
    found: dict[TopicPartition, tuple[int, int | None]] = {}
    for answer in answers:
        for topic, partitions in answer.topics:
            for partition, error_code, highwater, *data in partitions:
                tp = TopicPartition(topic, partition)
                if highwater is None or highwater < 0:
                    continue
                stamp = None if error_code else _first_timestamp(data[-1], starts[tp])
                found[tp] = (int(highwater), stamp)
    return found


def _first_timestamp(records: bytes | None, offset: int) -> int | None:
    """The timestamp (ms) of the first record at or after `offset` in a fetch's record set."""
    if not records:
        return None
    batches = MemoryRecords(records)
    while True:
        batch = batches.next_batch()
        if batch is None:
            return None
        for record in batch:
            if record.offset >= offset and record.timestamp is not None:
                return int(record.timestamp)


async def consumer_lag(kafka: KafkaTarget, groups: Groups) -> list[LagRow]:
    """One reading with clients opened for it (the `segstream lag` command)."""
    async with LagReader(kafka, groups) as reader:
        return await reader.read()


@dataclass(frozen=True)
class Trend:
    """How one partition's lag moved between two readings."""

    direction: str
    """`growing`, `shrinking` or `steady`."""
    rate: float
    """Records per second (positive: growing)."""


def lag_key(row: LagRow) -> tuple[str, str, int]:
    return (row.group, row.topic, row.partition)
