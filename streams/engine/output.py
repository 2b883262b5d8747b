"""Batched Kafka output: membership changes, dead letters and forwarded events.

`aiokafka.send()` costs tens of microseconds per record in Python; building batches per
topic-partition with `create_batch()` as records are added and handing them over with
`send_batch()` keeps the per-record cost to an append. `send()` returns only when the broker
acknowledged every record it took, which is the point after which the checkpoint may commit the
state and offsets that produced them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from streams.broker.partitioning import owner_partition

Headers = Sequence[tuple[str, bytes]]
_NO_HEADERS: Final[list[tuple[str, bytes]]] = []  # read, never mutated, by aiokafka's builder


class PartitionBatches:
    """One topic-partition's records: the batches filled so far and the one being filled.

    A record goes into a Kafka batch as it is added, so its bytes can be freed at once: the
    allocator hands the same memory to the next record, which stays in the CPU cache, instead of
    the batch's thousands of records living until the send copies them in.

    `add` appends to the batch's C record builder itself: `BatchBuilder.append` wraps that one
    call in three Python calls (keyword parsing, a serializer hook, a closed check), and a cold
    start writes several records per event (docs/design.md, "Output batches"). It keeps
    `BatchBuilder`'s own bookkeeping (`_relative_offset`, which `record_count()` and the send
    read; closing when full), which ties this class to aiokafka's 0.14 internals, pinned in
    pyproject.toml; `tests/streams/engine/test_output.py` checks that what it builds goes out
    whole and in order.
    """

    __slots__ = ("_create", "current", "full")

    def __init__(self, create: Callable[[], BatchBuilder]) -> None:
        self._create = create
        self.full: list[BatchBuilder] = []
        self.current = create()

    def add(self, key: bytes | None, value: bytes, headers: Headers = _NO_HEADERS) -> None:
        listed = headers if headers is _NO_HEADERS else list(headers)
        batch = self.current
        offset = batch._relative_offset
        if batch._builder.append(offset, None, key=key, value=value, headers=listed) is not None:
            batch._relative_offset = offset + 1
            return
        batch.close()  # full: as BatchBuilder.append does
        self.full.append(batch)
        self.current = self._create()
        if self.current.append(key=key, value=value, timestamp=None, headers=listed) is None:
            raise ValueError(f"a record of {len(value)} bytes exceeds the batch size")

    def batches(self) -> list[BatchBuilder]:
        if self.current.record_count():
            return [*self.full, self.current]
        return list(self.full)


Pending = dict[tuple[str, int], PartitionBatches]


class BatchProducer:
    """Collects records per topic-partition and sends them as few batches as possible."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self._pending: Pending = {}
        self._partitions: dict[str, int] = {}
        self._handing_over: asyncio.Future[None] | None = None  # the latest send's hand-over

    async def partitions_of(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            found = await self.producer.partitions_for(topic)
            count = self._partitions[topic] = len(found)
        return count

    def known_partitions(self, topic: str) -> int:
        """Partition count of a topic already looked up with `partitions_of`."""
        return self._partitions[topic]

    def add(
        self, topic: str, partition: int, key: bytes | None, value: bytes,
        headers: Headers = _NO_HEADERS,
    ) -> None:
        self.pending(topic, partition).add(key, value, headers)

    def pending(self, topic: str, partition: int) -> PartitionBatches:
        """The records to send to one topic-partition, to `add` to directly in hot loops."""
        batches = self._pending.get((topic, partition))
        if batches is None:
            batches = self._pending[(topic, partition)] = PartitionBatches(
                self.producer.create_batch)
        return batches

    def partition_of(self, topic: str, key: str) -> int:
        """The partition the default (murmur2) partitioner gives `key` in a known topic."""
        return owner_partition(key, self._partitions[topic])

    def detach(self) -> Pending:
        """Take everything added so far, to `send` later; new records start a new set."""
        pending, self._pending = self._pending, {}
        return pending

    async def send(self, pending: Pending) -> None:
        """Send what `detach` took and wait until the broker acknowledged all of it.

        Sends may overlap (the processor sends a batch while the previous one still waits for
        its acks): each hands its records to the producer only after the send started before
        it has handed over all of its own, so a partition's records keep the order in which
        `send` was called, whatever order the producer's per-partition waits end in.
        """
        previous = self._handing_over
        handed_over: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handing_over = handed_over
        futures: list[asyncio.Future[Any]] = []
        try:
            if previous is not None:
                await asyncio.shield(previous)
            for topic, partition, batch in _by_round(pending):
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        finally:
            handed_over.set_result(None)
            if self._handing_over is handed_over:
                self._handing_over = None
        if futures:
            await asyncio.gather(*futures)


def _by_round(pending: Pending) -> list[tuple[str, int, BatchBuilder]]:
    """Every partition's first batch, then every partition's second one, and so on.

    The producer queues one batch per partition until a produce request takes it, and has one
    request in flight per broker. Handed over partition by partition, a partition's second
    batch waits for a request that carries little more than its first, and the requests go one
    after the other; by round, each request carries a batch of every partition (docs/design.md,
    "Output batches").
    """
    rounds = [(i, topic, partition, batch) for (topic, partition), batches in pending.items()
              for i, batch in enumerate(batches.batches())]
    rounds.sort(key=lambda entry: entry[0])  # stable: a partition's batches keep their order
    return [(topic, partition, batch) for _, topic, partition, batch in rounds]
