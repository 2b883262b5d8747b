"""The chaos run's input: seeded storefront traffic, and a producer that rides through outages.

`chaos_events` is `Storefront`'s stream with two things real storefronts do mixed in: customers
changing their email (a `customer.updated` carrying a new one, so members move at the provider)
and events sent again with the same `event_id` (a producer's retry). `SteadyProducer` sends them
at a steady rate; a send that fails (the broker frozen past the request timeout, say) is sent
again, with everything after it in its chunk, so each topic-partition still holds a customer's
events in the order they were made (a re-sent copy is a duplicate the processor drops). Each
event keeps the record timestamp of its first attempt: the processor orders a partition's two
input topics by record timestamp, so a re-sent event still sorts where it was made.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from segments.events import TOPIC_OF_TYPE
from streams.broker.topics import TopicNames
from streams.local.traffic import Storefront

log = logging.getLogger("chaos.traffic")

EMAIL_CHANGE_RATE: Final = 0.03
RESEND_RATE: Final = 0.01
RESEND_WINDOW: Final = 1000
"""A re-sent event is one of the last this many: a retry comes soon after the first send."""
STEP: Final = timedelta(milliseconds=200)
"""Event time between two events; the stream ends about now."""
CHUNK: Final = 50
RETRY_PAUSE_S: Final = 0.5


@dataclass(frozen=True)
class Traffic:
    """What is sent, in order; `distinct` is each event once, in the order first sent."""

    sent: list[dict[str, Any]]
    distinct: list[dict[str, Any]]
    email_changes: int


def chaos_events(seed: int, count: int, customers: int) -> Traffic:
    """`count` distinct events (email changes included), plus re-sent copies."""
    rng = random.Random(seed * 7919 + 1)
    shop = Storefront(seed=seed, customers=customers,
                      start=datetime.now(UTC) - STEP * count)
    versions: dict[str, int] = {}
    sent: list[dict[str, Any]] = []
    distinct: list[dict[str, Any]] = []
    changes = 0
    known: list[str] = []
    while len(distinct) < count:
        if known and rng.random() < EMAIL_CHANGE_RATE:
            changes += 1
            event = _email_change(changes, distinct[-1], rng.choice(known), versions)
        else:
            event = next(shop.events(1, STEP))
            if event["type"] in ("prospect.created", "customer.created"):
                known.append(event["customer_id"])
        sent.append(event)
        distinct.append(event)
        if rng.random() < RESEND_RATE:
            sent.append(rng.choice(distinct[-RESEND_WINDOW:]))
    return Traffic(sent, distinct, changes)


def _email_change(number: int, after: dict[str, Any], customer_id: str,
                  versions: dict[str, int]) -> dict[str, Any]:
    """A `customer.updated` giving the customer a new email, at the time of the event before."""
    versions[customer_id] = versions.get(customer_id, 0) + 1
    return {
        "event_id": f"ev-email-{number:07d}", "type": "customer.updated",
        "occurred_at": after["occurred_at"], "customer_id": customer_id,
        "data": {"email": f"{customer_id}.v{versions[customer_id]}@example.com"},
    }


@dataclass
class ProduceStats:
    records: int = 0
    """Records the broker acknowledged (re-sent ones counted again)."""
    retried_chunks: int = 0
    failed_sends: int = 0
    seconds: float = 0.0


class SteadyProducer:
    """Sends events to their topics, keyed by customer, at a steady rate, until each is
    acknowledged."""

    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.stats = ProduceStats()
        self._stamps: dict[int, int] = {}
        """Record timestamp of each position in the stream, from its first attempt."""

    async def run(self, events: Sequence[dict[str, Any]], rate: float) -> ProduceStats:
        """Send `events` at `rate` per second; behind schedule (a frozen broker), catch up."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    request_timeout_ms=15_000, retry_backoff_ms=200)
        await producer.start()
        started = time.monotonic()
        try:
            for start in range(0, len(events), CHUNK):
                await asyncio.sleep(max(0.0, started + start / rate - time.monotonic()))
                end = min(start + CHUNK, len(events))
                await self._send_chunk(producer, [(n, events[n]) for n in range(start, end)])
        finally:
            await producer.stop()
        self.stats.seconds = time.monotonic() - started
        return self.stats

    async def _send_chunk(self, producer: AIOKafkaProducer,
                          chunk: list[tuple[int, dict[str, Any]]]) -> None:
        while chunk:
            failed = await self._send(producer, chunk)
            if failed is None:
                return
            self.stats.retried_chunks += 1
            chunk = chunk[failed:]
            await asyncio.sleep(RETRY_PAUSE_S)

    async def _send(self, producer: AIOKafkaProducer,
                    chunk: list[tuple[int, dict[str, Any]]]) -> int | None:
        """Send a chunk; the index of its first event not acknowledged, or None."""
        futures: list[asyncio.Future[Any]] = []
        broken: int | None = None
        for position, event in chunk:
            topic = getattr(self.topics, TOPIC_OF_TYPE[event["type"]])
            stamp = self._stamps.setdefault(position, int(time.time() * 1000))
            try:
                futures.append(await producer.send(
                    topic, orjson.dumps(event), key=event["customer_id"].encode(),
                    timestamp_ms=stamp))
            except KafkaError as exc:
                self._failed(exc)
                broken = len(futures)
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        for n, result in enumerate(results):
            if isinstance(result, BaseException):
                self._failed(result)
                self.stats.records += n
                return n
        self.stats.records += len(results)
        return broken

    def _failed(self, error: BaseException) -> None:
        self.stats.failed_sends += 1
        if self.stats.failed_sends <= 20 or self.stats.failed_sends % 100 == 0:
            log.warning("send failed (%s: %s); sending it again", type(error).__name__, error)
