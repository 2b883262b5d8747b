"""Provider-sync benchmark: membership event -> member at the provider; members synced per second.

A benchmark, not a test: it prints figures next to their targets and never asserts.

    python benchmarks/sync_latency.py                      # 1k events/s for 20 s, then the bursts
    python benchmarks/sync_latency.py --rate 500 --duration 10 --burst 2000
    python benchmarks/sync_latency.py --provider sendlane  # one provider's burst only
    python benchmarks/sync_latency.py --via client         # bursts by calling the clients

The sync worker (`streams.sync.worker.run_sync`) runs in this process against local fakes of
the three providers, each answering every request `--latency` (20 ms) late and enforcing its
real limits (Mailchimp 10 connections; ActiveCampaign 5 calls/s and its bulk import's 100 a
minute, imports applied `--import-delay` after the call; Sendlane 240 calls/min, writes applied
50 ms after the call). Membership events (contract section 7) are produced straight to
`segment-membership`, each stamped with its send time; the fake's static segment or tag is
polled and each email's first appearance there is matched to its stamp.

Stream (Mailchimp only: the others' limits allow no 1k/s): events at `--rate` for
`--duration`; target p99 <= 1 s from event to member in the segment. Bursts: `--burst` adds
(5,000) per provider, timed from the first add to the last member in the segment or tag;
targets Mailchimp >= 2,000 members/s, ActiveCampaign and Sendlane >= 50 members/s.
`--via worker` (the default) sends the bursts through the sync worker; `--via client` calls
`upsert_members(list_id, members, segment_id)` directly in batches of the worker's
`batch_max` (500), one batch at a time as the worker does per target, and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from redis.asyncio import Redis

from providers.base import Member
from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.base import FakeProvider, Faults
from providers.fakes.mailchimp import MailchimpFake, subscriber_hash
from providers.fakes.sendlane import SendlaneFake
from providers.fakes.server import serve_fake
from providers.limits import ProviderLimits
from providers.registry import make_client
from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from streams.storage.client import connect_redis
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.sync.worker import SyncCounters, SyncOptions, run_sync

PROVIDERS = ("mailchimp", "activecampaign", "sendlane")
SEGMENT = {"name": "Bench", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gt", "value": 0}]}]}
TARGETS = {"mailchimp": 2000.0, "activecampaign": 50.0, "sendlane": 50.0}
LIMITS = {"mailchimp": "10 concurrent connections, 500 members a call",
          "activecampaign": "5 calls/s; bulk import 250 a call, 100 calls/min",
          "sendlane": "240 calls/min, 100 contacts a call"}
WARM_UP = 9_000_000
STREAM_FIRST = 0
BURST_FIRST = {"mailchimp": 5_000_000, "activecampaign": 6_000_000, "sendlane": 7_000_000}
LINE = 56


@dataclass
class Bench:
    """One provider's fake, where its members go, and how to see who is there."""

    provider: str
    fake: FakeProvider
    base_url: str
    list_id: str
    segment_id: str

    @property
    def segment(self) -> str:
        """The segstream segment synced to this provider."""
        return f"bench-{self.provider}"

    def key(self, email: str) -> str:
        """How ``in_segment`` names a member: Mailchimp's subscriber hash, else the email."""
        return subscriber_hash(email) if isinstance(self.fake, MailchimpFake) else email.lower()

    def in_segment(self) -> set[str]:
        """Members (``key``) the fake holds in the static segment or tag now.

        Polled every few milliseconds beside the worker, so Mailchimp's is the segment's
        own set of hashes, not a set built per poll.
        """
        fake = self.fake
        if isinstance(fake, MailchimpFake):
            return fake.state.lists[self.list_id].segments[int(self.segment_id)].members
        if isinstance(fake, ActiveCampaignFake):
            fake.state.imports.apply_due()
            return fake.state.tagged_emails(int(self.segment_id))
        assert isinstance(fake, SendlaneFake)
        fake.state.apply_due()
        tag = int(self.segment_id)
        return {c.email.lower() for c in fake.state.contacts.values() if tag in c.tags}


def email_of(n: int) -> str:
    return f"c-{n:07d}@example.com"


def change(n: int, segment_id: str) -> tuple[bytes, bytes]:
    customer_id = f"c-{n:07d}"
    record = {
        "event_id": f"bench-{segment_id}-{n}", "type": "segment.member_added",
        "segment_id": segment_id, "segment_version": 1, "customer_id": customer_id,
        "email": email_of(n), "changed_at": datetime.now(UTC).isoformat(), "reason": "event",
    }
    return customer_id.encode(), orjson.dumps(record)


async def produce(
    producer: AIOKafkaProducer, topic: str, segment_id: str, first: int, count: int,
    rate: float | None, stamps: dict[str, float],
) -> None:
    """``count`` adds to ``segment_id``, at ``rate`` a second (None: as fast as possible)."""
    started = time.monotonic()
    for k in range(count):
        if rate is not None:
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        key, value = change(first + k, segment_id)
        stamps[email_of(first + k)] = time.monotonic()
        await producer.send(topic, value, key=key)
    await producer.flush()


async def watch(
    emails: Callable[[], set[str]], wanted: set[str], seen: dict[str, float], limit_s: float,
    every: float,
) -> None:
    """Stamp each wanted member when it first shows up, until all have or time runs out."""
    deadline = time.monotonic() + limit_s
    while not wanted <= seen.keys() and time.monotonic() < deadline:
        now = time.monotonic()
        for email in (emails() & wanted) - seen.keys():
            seen[email] = now
        await asyncio.sleep(every)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_fake(provider: str, args: argparse.Namespace) -> FakeProvider:
    """The provider's fake with its real limits and the benchmark's latency."""
    faults = Faults(latency=args.latency)
    if provider == "activecampaign":
        return ActiveCampaignFake(faults, import_delay=args.import_delay)
    if provider == "sendlane":
        return SendlaneFake(faults)
    return MailchimpFake(faults)


async def main(args: argparse.Namespace) -> None:
    print(f"{'fake provider latency per request':<{LINE}} {args.latency * 1000:.0f} ms"
          f"   (ActiveCampaign imports applied {args.import_delay:.1f} s after the call,"
          " Sendlane writes 50 ms)")
    with tempfile.TemporaryDirectory() as tmp:
        async with EmbeddedServices(Path(tmp)) as svc, AsyncExitStack() as stack:
            prefix = f"sy{os.getpid()}"
            settings = Settings(kafka_bootstrap=svc.kafka_bootstrap, redis_url=svc.redis_url,
                                topic_prefix=f"{prefix}.", key_prefix=prefix,
                                group_id=f"{prefix}-processor", partitions=8,
                                secret_key=SecretStr("s" * 32))
            await ensure_topics(svc.kafka_bootstrap, TopicNames(settings.topic_prefix), 8, 1)
            benches = []
            for provider in args.providers:
                fake = build_fake(provider, args)
                list_id, tags = fake.seed_list("Bench audience", ["Bench"])
                base_url = await stack.enter_async_context(serve_fake(fake))
                benches.append(Bench(provider, fake, base_url, list_id, tags["Bench"]))
            redis = connect_redis(svc.redis_url)
            try:
                await run(args, settings, redis, benches)
            finally:
                await redis.aclose()


async def run(args: argparse.Namespace, settings: Settings, redis: Redis,
              benches: list[Bench]) -> None:
    assert settings.secret_key and settings.kafka_bootstrap
    await configure(settings, redis, benches)
    stop, counters = asyncio.Event(), SyncCounters()
    worker = asyncio.create_task(run_sync(settings, redis, stop, counters=counters))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=2)
    await producer.start()
    topic = TopicNames(settings.topic_prefix).membership
    try:
        for bench in benches:
            await warm_up(producer, topic, bench)
        for bench in benches:
            if bench.provider == "mailchimp" and args.duration > 0:
                await stream_phase(args, producer, topic, bench)
        for bench in benches:
            if args.via == "worker":
                await burst_through_worker(args, producer, topic, bench)
            else:
                await burst_through_client(args, bench)
        print(f"{'sync worker counters':<{LINE}} {counters.as_dict()}")
    finally:
        await producer.stop()
        stop.set()
        await worker


async def configure(settings: Settings, redis: Redis, benches: list[Bench]) -> None:
    """A profile per fake and a segment synced to each."""
    assert settings.secret_key
    profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
    definitions = DefinitionStore(redis, settings.key_prefix)
    for bench in benches:
        profile = await profiles.create(f"bench {bench.provider}", bench.provider,
                                        bench.fake.credentials(), bench.base_url)
        await profiles.sync_lists(profile.id)
        await definitions.put(bench.segment, {**SEGMENT, "auto_responder": {
            "profile_id": profile.id, "list_id": bench.list_id,
            "segment_id": bench.segment_id}})


async def warm_up(producer: AIOKafkaProducer, topic: str, bench: Bench) -> None:
    """One change through, so the group has formed and the worker is reading."""
    await produce(producer, topic, bench.segment, WARM_UP, 1, None, {})
    await watch(bench.in_segment, {bench.key(email_of(WARM_UP))}, {}, limit_s=120, every=0.02)


async def stream_phase(
    args: argparse.Namespace, producer: AIOKafkaProducer, topic: str, bench: Bench
) -> None:
    count = int(args.rate * args.duration)
    stamps: dict[str, float] = {}
    seen: dict[str, float] = {}
    wanted = {bench.key(email_of(STREAM_FIRST + k)) for k in range(count)}
    watcher = asyncio.create_task(
        watch(bench.in_segment, wanted, seen, args.duration + 30, every=0.005))
    await produce(producer, topic, bench.segment, STREAM_FIRST, count, args.rate, stamps)
    await watcher
    arrived = {e: seen[bench.key(e)] for e in stamps if bench.key(e) in seen}
    latencies = [(arrived[e] - t) * 1000 for e, t in stamps.items() if e in arrived]
    print(f"{'membership events at a fixed rate (mailchimp)':<{LINE}} "
          f"{count:,} at {args.rate:,.0f}/s, through the sync worker")
    print(f"{'reached the provider':<{LINE}} {len(latencies):,} of {count:,}")
    if latencies:
        p99 = percentile(latencies, 0.99)
        verdict = "PASS" if p99 <= 1000 and len(latencies) == count else "MISS"
        print(f"{'event -> provider latency p50':<{LINE}} {statistics.median(latencies):>8.0f} ms")
        print(f"{'event -> provider latency p99':<{LINE}} {p99:>8.0f} ms"
              f"   target <= 1000 ms  {verdict}")
        print(f"{'event -> provider latency max':<{LINE}} {max(latencies):>8.0f} ms")


async def burst_through_worker(
    args: argparse.Namespace, producer: AIOKafkaProducer, topic: str, bench: Bench
) -> None:
    first = BURST_FIRST[bench.provider]
    wanted = {bench.key(email_of(first + k)) for k in range(args.burst)}
    seen: dict[str, float] = {}
    started = time.monotonic()
    watcher = asyncio.create_task(watch(bench.in_segment, wanted, seen, args.burst_limit, 0.05))
    await produce(producer, topic, bench.segment, first, args.burst, None, {})
    await watcher
    report_burst(args, bench, len(seen), time.monotonic() - started, "through the sync worker")


async def burst_through_client(args: argparse.Namespace, bench: Bench) -> None:
    first = BURST_FIRST[bench.provider]
    members = [Member(email_of(first + k)) for k in range(args.burst)]
    wanted = {bench.key(m.email) for m in members}
    batch = SyncOptions().batch_max
    seen: dict[str, float] = {}
    started = time.monotonic()
    async with make_client(bench.provider, bench.fake.credentials(), bench.base_url,
                           limits=ProviderLimits()) as client:
        watcher = asyncio.create_task(
            watch(bench.in_segment, wanted, seen, args.burst_limit, 0.05))
        for k in range(0, len(members), batch):
            await client.upsert_members(bench.list_id, members[k : k + batch],
                                        bench.segment_id)
        await watcher
    how = f"client calls upsert_members(list, {batch}, segment), not the worker"
    report_burst(args, bench, len(seen), time.monotonic() - started, how)


def report_burst(
    args: argparse.Namespace, bench: Bench, synced: int, seconds: float, how: str
) -> None:
    rate = synced / seconds
    target = TARGETS[bench.provider]
    verdict = "PASS" if rate >= target and synced == args.burst else "MISS"
    print(f"{f'burst of adds synced ({bench.provider})':<{LINE}} "
          f"{synced:,} of {args.burst:,} in {seconds:.1f} s, {how}")
    print(f"{f'members synced per second ({bench.provider})':<{LINE}} {rate:>8,.1f} /s"
          f"   target >= {target:,.0f}/s  {verdict}   ({LIMITS[bench.provider]})")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="stream events/s")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="stream seconds (0 skips the stream)")
    parser.add_argument("--burst", type=int, default=5000, help="adds in each provider's burst")
    parser.add_argument("--burst-limit", type=float, default=600.0,
                        help="seconds a burst may take before it is reported as it stands")
    parser.add_argument("--provider", choices=PROVIDERS, default=None,
                        help="one provider only (default: all three)")
    parser.add_argument("--via", choices=("worker", "client"), default="worker")
    parser.add_argument("--latency", type=float, default=0.02, help="fake provider latency, s")
    parser.add_argument("--import-delay", type=float, default=1.0,
                        help="seconds before the fake ActiveCampaign applies an import")
    args = parser.parse_args()
    args.providers = (args.provider,) if args.provider else PROVIDERS
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
