"""Batched Kafka output: membership changes, dead letters and forwarded events.

`aiokafka.send()` costs tens of microseconds per record in Python; building one batch per
topic-partition with `create_batch()` and handing it over with `send_batch()` keeps the per-record
cost to an append. `flush()` returns only when the broker acknowledged every record, which is the
point after which the processor may commit its state and offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from aiokafka import AIOKafkaProducer

from streams.partitioning import owner_partition

Headers = Sequence[tuple[str, bytes]]
NO_HEADERS: Final[list[tuple[str, bytes]]] = []  # read, never mutated, by aiokafka's builder
Pending = dict[tuple[str, int], list[tuple[bytes | None, bytes, Headers]]]


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
        headers: Headers = NO_HEADERS,
    ) -> None:
        self.pending(topic, partition).append((key, value, headers))

    def pending(self, topic: str, partition: int) -> list[tuple[bytes | None, bytes, Headers]]:
        """The list of records to send to one topic-partition, to append (key, value, headers)
        to directly in hot loops; `NO_HEADERS` when there are none."""
        records = self._pending.get((topic, partition))
        if records is None:
            records = self._pending[(topic, partition)] = []
        return records

    def partition_of(self, topic: str, key: str) -> int:
        """The partition the default (murmur2) partitioner gives `key` in a known topic."""
        return owner_partition(key, self._partitions[topic])

    def __len__(self) -> int:
        return sum(len(v) for v in self._pending.values())

    def detach(self) -> Pending:
        """Take everything added so far, to `send` later; new records start a new set."""
        pending, self._pending = self._pending, {}
        return pending

    async def flush(self) -> None:
        """Send everything pending and wait until the broker acknowledged all of it."""
        await self.send(self.detach())

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
            for (topic, partition), records in pending.items():
                futures.extend(await self._send_records(topic, partition, records))
        finally:
            handed_over.set_result(None)
            if self._handing_over is handed_over:
                self._handing_over = None
        if futures:
            await asyncio.gather(*futures)

    async def _send_records(
        self, topic: str, partition: int, records: list[tuple[bytes | None, bytes, Headers]]
    ) -> list[asyncio.Future[Any]]:
        futures = []
        batch = self.producer.create_batch()
        for key, value, headers in records:
            listed = headers if headers is NO_HEADERS else list(headers)
            if batch.append(key=key, value=value, timestamp=None, headers=listed) is None:
                futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=listed)
        if batch.record_count():
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures
