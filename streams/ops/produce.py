"""`segstream produce`: validate events from JSON Lines and send each to its input topic.

Every line is checked with the same decoder the processor uses. Lines that fail are reported with
their line number and reason and are not sent; the valid ones are sent, keyed by `customer_id`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from segments.events import TOPIC_OF_TYPE, InvalidEvent, decode_event, event_type
from streams.broker.connection import KafkaTarget, client_options
from streams.broker.topics import TopicNames


@dataclass
class ProduceReport:
    """What `produce` did: counts per topic and the rejected lines."""

    sent: dict[str, int] = field(default_factory=dict)
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


@dataclass(frozen=True)
class ValidEvent:
    """A line that passed validation, ready to send."""

    topic: str
    key: bytes
    value: bytes


def validate_lines(lines: Iterable[bytes], topics: TopicNames, report: ProduceReport) -> Iterator[
    ValidEvent
]:
    """Yield the valid events; record each invalid line (1-based number, reason) in `report`."""
    for number, line in enumerate(lines, start=1):
        raw = line.strip()
        if not raw:
            continue
        try:
            event = decode_event(raw)
        except InvalidEvent as exc:
            report.rejected.append((number, f"{exc.code}: {exc.reason}"))
            continue
        topic = getattr(topics, TOPIC_OF_TYPE[event_type(event)])
        yield ValidEvent(topic, event.customer_id.encode(), raw)


async def produce_lines(
    kafka: KafkaTarget, lines: Iterable[bytes], topics: TopicNames, idempotent: bool = False
) -> ProduceReport:
    """Send the valid lines; returns once the broker acknowledged all of them."""
    report = ProduceReport()
    producer = AIOKafkaProducer(
        **client_options(kafka), acks="all", linger_ms=5, enable_idempotence=idempotent
    )
    await producer.start()
    try:
        futures = []
        for event in validate_lines(lines, topics, report):
            futures.append(await producer.send(event.topic, event.value, key=event.key))
            report.sent[event.topic] = report.sent.get(event.topic, 0) + 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return report
