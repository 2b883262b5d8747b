"""Provider-sync benchmark: membership event -> member at the provider; members synced per second.

A benchmark, not a test: it prints figures next to their targets and never asserts.

    python benchmarks/sync_latency.py              # 1k membership events/s for 20 s, then a burst
    python benchmarks/sync_latency.py --rate 500 --duration 10 --burst 5000
    python benchmarks/sync_latency.py --provider activecampaign   # members/s under its limit

The sync worker (`streams.sync.worker.run_sync`) runs in this process against a local fake Mailchimp
answering every request 20 ms late (`--latency`). Membership events (contract section 7) are
produced straight to `segment-membership` at a fixed rate, each stamped with its send time; the
fake's static segment is polled every 5 ms and each email's first appearance there is matched to
its stamp. Then a burst of `--burst` adds measures members synced per second, next to what
Mailchimp's own limit (10 concurrent connections, 500 members a call) would allow.
Target: p99 <= 1 s at 1k events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from redis.asyncio import Redis

from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.base import FakeProvider, Faults
from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.sendlane import SendlaneFake
from providers.fakes.server import serve_fake
from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from streams.storage.client import connect_redis
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.sync.worker import SyncCounters, run_sync

SEGMENT = {"name": "Bench", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gt", "value": 0}]}]}


def change(n: int, segment_id: str) -> tuple[bytes, bytes]:
    customer_id = f"c-{n:07d}"
    record = {
        "event_id": f"bench-{n}", "type": "segment.member_added", "segment_id": segment_id,
        "segment_version": 1, "customer_id": customer_id, "email": f"{customer_id}@example.com",
        "changed_at": datetime.now(UTC).isoformat(), "reason": "event",
    }
    return customer_id.encode(), orjson.dumps(record)


async def produce_at_rate(
    producer: AIOKafkaProducer, topic: str, segment_id: str, first: int, count: int, rate: float,
    stamps: dict[str, float],
) -> None:
    started = time.monotonic()
    for k in range(count):
        delay = started + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        key, value = change(first + k, segment_id)
        stamps[f"{key.decode()}@example.com"] = time.monotonic()
        await producer.send(topic, value, key=key)
    await producer.flush()


async def watch(
    emails: Callable[[], set[str]], wanted: int, seen: dict[str, float], limit_s: float
) -> None:
    deadline = time.monotonic() + limit_s
    while len(seen) < wanted and time.monotonic() < deadline:
        now = time.monotonic()
        for email in emails() - seen.keys():
            seen[email] = now
        await asyncio.sleep(0.005)


FAKES: dict[str, Callable[[Faults], FakeProvider]] = {
    "mailchimp": MailchimpFake, "activecampaign": ActiveCampaignFake,
    "sendlane": SendlaneFake,
}
LIMITS = {"mailchimp": "10 concurrent connections, 500 members a call",
          "activecampaign": "5 requests/s per account", "sendlane": "240 requests/min"}
BENCH_EMAILS = [f"c-{n:07d}@example.com" for n in (9_000_000, *range(5_000_000, 5_020_000))]


def tagged(fake: FakeProvider, list_id: str, tag: str) -> Callable[[], set[str]]:
    """The emails the fake holds in the bench's static segment or tag."""
    if isinstance(fake, MailchimpFake):
        return lambda: fake.state.segment_emails(list_id, tag)
    if isinstance(fake, ActiveCampaignFake):
        tag_id = int(tag)
        return lambda: {e for e in BENCH_EMAILS[:PROBE] if tag_id in fake.state.tag_ids(e)}
    assert isinstance(fake, SendlaneFake)
    tag_id = int(tag)

    def sendlane() -> set[str]:
        fake.state.apply_due()
        found = (fake.state.by_email(e) for e in BENCH_EMAILS[:PROBE])
        return {c.email for c in found if c is not None and tag_id in c.tags}
    return sendlane


PROBE = len(BENCH_EMAILS)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedServices(Path(tmp)) as svc:
            prefix = f"sy{os.getpid()}"
            settings = Settings(kafka_bootstrap=svc.kafka_bootstrap, redis_url=svc.redis_url,
                                topic_prefix=f"{prefix}.", key_prefix=prefix,
                                group_id=f"{prefix}-processor", partitions=8,
                                secret_key=SecretStr("s" * 32))
            topics = TopicNames(settings.topic_prefix)
            await ensure_topics(svc.kafka_bootstrap, topics, 8, 1)
            fake = FAKES[args.provider](Faults(latency=args.latency))
            list_id, tags = fake.seed_list("Bench audience", ["Bench"])
            redis = connect_redis(svc.redis_url)
            try:
                async with serve_fake(fake) as base_url:
                    await run(args, settings, redis, fake, base_url, list_id, tags["Bench"])
            finally:
                await redis.aclose()


async def run(
    args: argparse.Namespace, settings: Settings, redis: Redis, fake: FakeProvider,
    base_url: str, list_id: str, tag: str,
) -> None:
    assert settings.secret_key and settings.kafka_bootstrap
    profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
    profile = await profiles.create("bench", args.provider, fake.credentials(), base_url)
    await profiles.sync_lists(profile.id)
    await DefinitionStore(redis, settings.key_prefix).put("bench", {
        **SEGMENT, "auto_responder": {"profile_id": profile.id, "list_id": list_id,
                                      "segment_id": tag}})
    stop, counters = asyncio.Event(), SyncCounters()
    worker = asyncio.create_task(run_sync(settings, redis, stop, counters=counters))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    try:
        in_segment = tagged(fake, list_id, tag)
        await warm_up(producer, settings, in_segment)
        if args.provider == "mailchimp":
            await latency_phase(args, producer, settings, in_segment)
        else:  # 5 req/s (ActiveCampaign), 240/min (Sendlane): no 1k/s phase is possible
            limit = LIMITS[args.provider]
            print(f"{args.provider}: fixed-rate latency phase skipped (rate limit {limit})")
        await burst_phase(args, producer, settings, in_segment)
        print(f"{'sync worker counters':<52} {counters.as_dict()}")
    finally:
        await producer.stop()
        stop.set()
        await worker


async def warm_up(
    producer: AIOKafkaProducer, settings: Settings, in_segment: Callable[[], set[str]]
) -> None:
    """One change through, so the group has formed and the worker is reading."""
    topic = TopicNames(settings.topic_prefix).membership
    stamps: dict[str, float] = {}
    await produce_at_rate(producer, topic, "bench", 9_000_000, 1, 1.0, stamps)
    await watch(in_segment, 1, {}, limit_s=120)


async def latency_phase(
    args: argparse.Namespace, producer: AIOKafkaProducer, settings: Settings,
    in_segment: Callable[[], set[str]],
) -> None:
    topic = TopicNames(settings.topic_prefix).membership
    count = int(args.rate * args.duration)
    stamps: dict[str, float] = {}
    seen: dict[str, float] = {}
    watcher = asyncio.create_task(watch(in_segment, count + 1, seen, args.duration + 30))
    await produce_at_rate(producer, topic, "bench", 0, count, args.rate, stamps)
    await watcher
    latencies = [(seen[e] - t) * 1000 for e, t in stamps.items() if e in seen]
    print(f"{'membership events at a fixed rate':<52} {count:,} at {args.rate:,.0f}/s")
    print(f"{'reached the provider':<52} {len(latencies):,} of {count:,}")
    if latencies:
        p99 = percentile(latencies, 0.99)
        verdict = "PASS" if p99 <= 1000 and len(latencies) == count else "MISS"
        print(f"{'event -> provider latency p50':<52} {statistics.median(latencies):>8.0f} ms")
        print(f"{'event -> provider latency p99':<52} {p99:>8.0f} ms   <= 1000 ms  {verdict}")
        print(f"{'event -> provider latency max':<52} {max(latencies):>8.0f} ms")


async def burst_phase(
    args: argparse.Namespace, producer: AIOKafkaProducer, settings: Settings,
    in_segment: Callable[[], set[str]],
) -> None:
    topic = TopicNames(settings.topic_prefix).membership
    before = len(in_segment())
    started = time.monotonic()
    for k in range(args.burst):
        key, value = change(5_000_000 + k, "bench")
        await producer.send(topic, value, key=key)
    await producer.flush()
    await watch(in_segment, before + args.burst, dict.fromkeys(in_segment(), 0.0), limit_s=300)
    seconds = time.monotonic() - started
    synced = len(in_segment()) - before
    print(f"{'burst of adds synced':<52} {synced:,} of {args.burst:,} in {seconds:.1f} s")
    print(f"{'members synced per second, one worker':<52} {synced / seconds:>8,.1f} /s"
          f"   ({args.provider}: {LIMITS[args.provider]})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=None,
                        help="adds in the burst (20,000 for mailchimp, 40 for the others)")
    parser.add_argument("--provider", choices=sorted(FAKES), default="mailchimp")
    parser.add_argument("--latency", type=float, default=0.02, help="fake provider latency, s")
    parsed = parser.parse_args()
    if parsed.burst is None:
        parsed.burst = 20_000 if parsed.provider == "mailchimp" else 40
    PROBE = 1 + parsed.burst
    asyncio.run(main(parsed))
