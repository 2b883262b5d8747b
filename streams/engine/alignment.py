"""Event-time alignment of co-partitioned inputs: a customer's profile before its later orders.

Partition p of `customers`, `orders` and the repartition topic holds one set of customers. Kafka
gives no order between topics: under a backlog the fetcher may hand over a partition's orders
before the profile events produced earlier on `customers`, and the orders would then be applied
to a customer without an email. So, as Kafka Streams does for the partitions of one task, the
records of a partition number are buffered per topic-partition and released in the order of
their record timestamps (per topic-partition, always in offset order): the head with the
smallest timestamp goes first.

A topic-partition whose buffer is empty while the broker holds records for it (its lag: the
fetch's high watermark beyond what was received) may still hand over an earlier record, so its
partition number waits for the next fetch, at most `idle_ms` (Kafka Streams'
`max.task.idle.ms`), then releases what it has. One with nothing to fetch never holds the others
back. A buffer over `max_buffered` records pauses its fetching, so a partition waiting for
another cannot fill memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from aiokafka import TopicPartition

MAX_BUFFERED: Final = 50_000
"""Records buffered per topic-partition before its fetching pauses."""

HighWater = Callable[[TopicPartition], int | None]


class EventTimeAligner:
    """Buffers fetched records per topic-partition; releases them in timestamp order."""

    def __init__(self, topics: Sequence[str], idle_ms: int, highwater: HighWater,
                 max_buffered: int = MAX_BUFFERED) -> None:
        self._topics = tuple(topics)
        self._idle_ms = idle_ms
        self._highwater = highwater
        self._max_buffered = max_buffered
        self._buffers: dict[TopicPartition, deque[Any]] = {}
        self._received: dict[TopicPartition, int] = {}
        """Next offset after what the consumer handed over (or where it was seeked)."""
        self._waiting_since: dict[int, int] = {}
        """Partition number -> when it started waiting for a lagging input (ms)."""

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        """Partitions now owned, each read from `positions`."""
        for tp, offset in positions.items():
            self._buffers[tp] = deque()
            self._received[tp] = offset
        for p in {tp.partition for tp in positions}:
            self._waiting_since.pop(p, None)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget the buffered records of `partitions`: their next owner reads them again."""
        gone = set(partitions)
        for tp in [tp for tp in self._buffers if tp.partition in gone]:
            del self._buffers[tp]
            self._received.pop(tp, None)
        for p in gone:
            self._waiting_since.pop(p, None)

    def add(self, fetched: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """Records the consumer handed over, per topic-partition in offset order."""
        for tp, records in fetched.items():
            buffer = self._buffers.get(tp)
            if buffer is None or not records:
                continue  # not ours (any more)
            buffer.extend(records)
            self._received[tp] = records[-1].offset + 1

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def full(self) -> set[TopicPartition]:
        """Topic-partitions whose fetching should pause (their buffer is full)."""
        return {tp for tp, b in self._buffers.items() if len(b) >= self._max_buffered}

    def release(self, now_ms: int, limit: int) -> tuple[list[Any], dict[tuple[str, int], int]]:
        """Up to `limit` records, each partition number's in event-time order (one run per
        partition number), and the next offset to read of every topic-partition they came from.
        """
        released: list[Any] = []
        positions: dict[tuple[str, int], int] = {}
        by_partition: dict[int, list[TopicPartition]] = {}
        for tp in self._buffers:
            by_partition.setdefault(tp.partition, []).append(tp)
        for p in sorted(by_partition):
            if len(released) >= limit:
                break
            run = self._release_partition(p, by_partition[p], now_ms, limit - len(released))
            for record in run:
                positions[(record.topic, p)] = record.offset + 1
            released.extend(run)
        return released, positions

    def _release_partition(self, partition: int, tps: list[TopicPartition], now_ms: int,
                           limit: int) -> list[Any]:
        inputs = [(self._buffers[tp], self._lags(tp)) for tp in tps]
        if not any(buffer for buffer, _ in inputs):
            self._waiting_since.pop(partition, None)
            return []
        if any(lags and not buffer for buffer, lags in inputs):
            since = self._waiting_since.setdefault(partition, now_ms)
            if now_ms - since < self._idle_ms:
                return []  # wait for the lagging input's records
            inputs = [(buffer, False) for buffer, _ in inputs]  # waited long enough: go on
        self._waiting_since.pop(partition, None)
        return _merge([(b, lags) for b, lags in inputs if b], limit)

    def _lags(self, tp: TopicPartition) -> bool:
        """Whether the broker holds records of `tp` not handed over yet (unknown: yes)."""
        end = self._highwater(tp)
        return end is None or end > self._received.get(tp, 0)


def _merge(inputs: list[tuple[deque[Any], bool]], limit: int) -> list[Any]:
    """Pop heads in timestamp order (ties: the earlier input) until `limit`, or until an
    input that lags runs dry while others still hold records: its next record, not fetched
    yet, may be earlier than theirs."""
    out: list[Any] = []
    if len(inputs) == 1:
        buffer = inputs[0][0]
        while buffer and len(out) < limit:
            out.append(buffer.popleft())
        return out
    while len(out) < limit:
        best: tuple[deque[Any], bool] | None = None
        for entry in inputs:
            buffer = entry[0]
            if buffer and (best is None or buffer[0].timestamp < best[0][0].timestamp):
                best = entry
        if best is None:
            break
        buffer, lags = best
        out.append(buffer.popleft())
        if not buffer and lags and any(b for b, _ in inputs):
            break
    return out
