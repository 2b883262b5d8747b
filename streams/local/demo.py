"""`segstream up --demo`: demo segments, generated storefront traffic, and a live view of changes.

What a newcomer sees within seconds: events going in, customers entering and leaving segments,
member counts per segment, and the most recent membership events as they appear on the topic.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import serve_fake
from segments.events import TOPIC_OF_TYPE
from streams.aio import pause
from streams.broker.connection import KafkaConnection
from streams.broker.topics import TopicNames, ensure_topics, high_watermarks, partition_counts
from streams.engine.processor import Processor
from streams.local.traffic import DEMO_SEGMENTS, Storefront
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore

MAILCHIMP_SEGMENT = "demo-vip-us"  # the demo segment whose members go to the fake Mailchimp
MAILCHIMP_TAG = "VIP US"


_CHANGE_LABELS = {
    "segment.member_added": "[green]+ added[/green]",
    "segment.member_removed": "[red]- removed[/red]",
    "segment.member_updated": "[cyan]~ email[/cyan]",
}


class DemoView:
    """What the live screen shows; updated by the producer and the membership watcher."""

    def __init__(self, segments: dict[str, str]) -> None:
        self.segments = segments
        self.sent = 0
        self.started = time.monotonic()
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=12)
        self.changes = 0
        self.members: dict[str, int] = dict.fromkeys(segments, 0)
        self.mailchimp: Callable[[], int] = lambda: 0

    def render(self, processor: Processor) -> Group:
        stats = processor.engine.stats if processor.engine else None
        elapsed = max(time.monotonic() - self.started, 1e-6)
        head = (
            f"events sent [bold]{self.sent}[/bold] ({self.sent / elapsed:.0f}/s)   "
            f"applied [bold]{stats.applied if stats else 0}[/bold]   "
            f"dead letters {stats.dead_letters if stats else 0}   "
            f"membership events [bold]{self.changes}[/bold]"
        )
        counts = Table("segment", "name", "members", "at Mailchimp", expand=True)
        for segment_id, name in self.segments.items():
            synced = str(self.mailchimp()) if segment_id == MAILCHIMP_SEGMENT else ""
            counts.add_row(segment_id, name, str(self.members.get(segment_id, 0)), synced)
        recent = Table("changed_at", "customer", "change", "segment", "reason", expand=True)
        for change in reversed(self.recent):
            recent.add_row(
                change["changed_at"][11:23], change["customer_id"],
                _CHANGE_LABELS.get(change["type"], change["type"]),
                change["segment_id"], change["reason"],
            )
        return Group(Panel(head, title="segstream demo  (Ctrl-C to stop)"), counts, recent)


async def run_demo(
    settings: Settings,
    redis: Redis,
    processor: Processor,
    stop: asyncio.Event,
    roles_stopped: asyncio.Event,
    console: Console,
    rate: int = 200,
) -> None:
    """Create the demo segments, then produce traffic and show changes until `stop`.

    The fake Mailchimp keeps answering until `roles_stopped`: the sync worker delivers what it
    holds before it stops, and would otherwise retry against a closed port.
    """
    topics = TopicNames(settings.topic_prefix)
    await ensure_topics(settings.kafka_connection(), topics, settings.partitions,
                        settings.replication_factor)
    fake = MailchimpFake()
    list_id, tags = fake.seed_list("Demo audience", [MAILCHIMP_TAG])
    async with serve_fake(fake) as base_url:
        try:
            target = await _link_mailchimp(settings, redis, fake, base_url, list_id, tags,
                                           console)
            store = DefinitionStore(redis, settings.key_prefix)
            for entry in DEMO_SEGMENTS:
                body = {k: v for k, v in entry.items() if k != "id"}
                if entry["id"] == MAILCHIMP_SEGMENT:
                    body["auto_responder"] = target
                await store.put(entry["id"], body)
            view = DemoView({e["id"]: e["name"] for e in DEMO_SEGMENTS})
            view.mailchimp = lambda: len(fake.state.segment_emails(list_id, tags[MAILCHIMP_TAG]))
            await _show(settings, redis, processor, stop, console, rate, view)
        finally:
            stop.set()  # also when the demo failed: the roles stop, and then the fake server
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # cancelled: nobody will set it
                await roles_stopped.wait()


async def _link_mailchimp(
    settings: Settings, redis: Redis, fake: MailchimpFake, base_url: str, list_id: str,
    tags: dict[str, str], console: Console,
) -> dict[str, str]:
    """Create the demo's auto-responder profile on the fake Mailchimp and sync its lists."""
    assert settings.secret_key is not None
    profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
    profile = await profiles.create("Demo Mailchimp (local fake)", "mailchimp",
                                    fake.credentials(), base_url)
    await profiles.sync_lists(profile.id)
    console.print(f"Demo auto-responder: fake Mailchimp at {base_url}, list {list_id!r}; "
                  f"members of {MAILCHIMP_SEGMENT!r} are synced to its tag {MAILCHIMP_TAG!r}")
    return {"profile_id": profile.id, "list_id": list_id, "segment_id": tags[MAILCHIMP_TAG]}


async def _show(
    settings: Settings, redis: Redis, processor: Processor, stop: asyncio.Event,
    console: Console, rate: int, view: DemoView,
) -> None:
    kafka = settings.kafka_connection()
    topics = TopicNames(settings.topic_prefix)
    counts = StateStore(redis, settings.key_prefix)
    tasks = [
        asyncio.create_task(_traffic(kafka, topics, view, stop, rate)),
        asyncio.create_task(_watch(kafka, topics, view, stop)),
    ]
    try:
        with Live(view.render(processor), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                for segment_id in view.segments:
                    view.members[segment_id] = await counts.member_count(
                        settings.partitions, segment_id)
                live.update(view.render(processor))
                await pause(stop, 0.25)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _traffic(
    kafka: KafkaConnection, topics: TopicNames, view: DemoView, stop: asyncio.Event, rate: int
) -> None:
    shop = Storefront(seed=int(time.time()), customers=2000)
    producer = AIOKafkaProducer(**kafka.client_options(), linger_ms=5)
    await producer.start()
    try:
        tick = 0.1
        per_tick = max(1, int(rate * tick))
        while not stop.is_set():
            shop.now = datetime.now(UTC)  # events happen now, so time-relative segments hold
            for event in shop.events(per_tick, step=timedelta(0)):
                topic = getattr(topics, TOPIC_OF_TYPE[event["type"]])
                await producer.send(topic, orjson.dumps(event),
                                    key=event["customer_id"].encode())
                view.sent += 1
            await pause(stop, tick)
    finally:
        await producer.stop()


async def _watch(
    kafka: KafkaConnection, topics: TopicNames, view: DemoView, stop: asyncio.Event
) -> None:
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        count = (await partition_counts(kafka, [topics.membership]))[topics.membership]
        tps = [TopicPartition(topics.membership, p) for p in range(count)]
        consumer.assign(tps)
        ends = await high_watermarks(kafka, tps)
        for tp in tps:
            consumer.seek(tp, ends.get(tp, 0))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    view.recent.append(orjson.loads(record.value))
                    view.changes += 1
    finally:
        await consumer.stop()
