"""Step 1 of a batch: consumed records become each owned partition's events to apply.

A record that is not a valid event, or is on the wrong topic for its type, becomes a dead letter
(original key, value and headers, plus the reason: `segments.deadletters`). A valid event whose
customer belongs to another partition (its producer hashed keys with another partitioner than
murmur2) is forwarded, bytes unchanged, to its owner's partition of the repartition topic, which
the owner consumes with its inputs. Both go to the output with the batch's other records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from segments.deadletters import dlq_headers
from segments.events import TOPIC_OF_TYPE, TYPE_OF_CLASS, InvalidEvent, decode_event, event_type
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.engine.cache import StateCache
from streams.engine.output import BatchProducer
from streams.engine.stats import EngineStats

log = logging.getLogger("segstream.engine")


class Record(Protocol):
    """What the engine reads of a consumed Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int: ...


@dataclass
class PartitionEvents:
    """One partition's decoded events of a batch, and the customers the cache lacks."""

    events: list[Any] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


class Intake:
    """Decodes records, dead-letters the bad ones and forwards strays."""

    def __init__(
        self, topics: TopicNames, partitions: int, output: BatchProducer, stats: EngineStats
    ) -> None:
        self._topics = topics
        self._partitions = partitions
        self._output = output
        self._stats = stats
        self._topic_of_class = {
            cls: getattr(topics, TOPIC_OF_TYPE[name]) for cls, name in TYPE_OF_CLASS.items()
        }
        self.oldest_ms: int | None = None
        """The record timestamp of the last split's oldest record (of the first record of
        each partition's run: the aligner releases a partition's records in timestamp order)."""

    def split(self, records: Iterable[Record], cache: StateCache) -> dict[int, PartitionEvents]:
        """The events to apply per partition, in record order, and the uncached customers.

        The hot loop of a batch: names are bound to locals, and no method is called per record
        in the common case (records mostly come grouped by partition).
        """
        split: dict[int, PartitionEvents] = {}
        topic_of_class, repartition = self._topic_of_class, self._topics.repartition
        partitions, cached = self._partitions, cache.partitions
        count = 0
        partition = -1
        states: dict[str, Any] = {}
        events: list[Any] = []
        missing: set[str] = set()
        oldest: int | None = None
        for record in records:
            count += 1
            if record.partition != partition:
                partition = record.partition
                if oldest is None or record.timestamp < oldest:
                    oldest = record.timestamp
                found = split.get(partition)
                if found is None:
                    found = split[partition] = PartitionEvents()
                states, events, missing = cached[partition], found.events, found.missing
            try:
                event = decode_event(record.value or b"")
            except InvalidEvent as exc:
                self._dead_letter(record, exc.code, exc.reason)
                continue
            topic = record.topic
            expected = topic_of_class[type(event)]
            if topic != expected and topic != repartition:
                reason = f"{event_type(event)} events belong on topic {expected!r}, not {topic!r}"
                self._dead_letter(record, "wrong_topic", reason)
                continue
            customer_id = event.customer_id
            owner = owner_partition(customer_id, partitions)
            if owner != partition:
                self._forward(record, owner)
                continue
            events.append(event)
            if customer_id not in states:
                missing.add(customer_id)
        self._stats.events += count
        self.oldest_ms = oldest
        return split

    def _dead_letter(self, record: Record, code: str, reason: str) -> None:
        self._stats.dead_letters += 1
        by_reason = self._stats.dead_letters_by_reason
        by_reason[code] = by_reason.get(code, 0) + 1
        log.warning(
            "dead letter from %s[%d]@%d: %s", record.topic, record.partition, record.offset,
            reason, extra={"partition": record.partition, "topic": record.topic,
                           "offset": record.offset, "code": code},
        )
        headers = [*record.headers, *dlq_headers(
            record.topic, record.partition, record.offset, code, reason
        )]
        dlq = self._topics.dlq
        partition = record.partition % self._output.known_partitions(dlq)
        self._output.add(dlq, partition, record.key, record.value or b"", headers)

    def _forward(self, record: Record, owner: int) -> None:
        self._stats.forwarded += 1
        origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
        headers = [*record.headers, ("segstream.forwarded-from", origin)]
        self._output.add(self._topics.repartition, owner, record.key, record.value or b"", headers)
