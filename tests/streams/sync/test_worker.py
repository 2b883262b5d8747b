"""The sync worker end to end: membership records on the real embedded broker, real
Redis, real clients over loopback HTTP to the fake providers.

Membership records are produced directly (contract section 7, keyed by customer_id),
so these tests do not depend on the processor.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from providers.retry import FullJitterBackoff
from streams.broker.topics import TopicNames, committed_offsets, high_watermarks
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.sync.worker import SyncCounters, SyncOptions, run_sync
from tests.providers.harness import FAST_POLICIES, Harness
from tests.streams.helpers import create_topics, read_topic, wait_for

FAST = SyncOptions(linger=0.05, max_attempts=8, backoff=FullJitterBackoff(base=0.005, cap=0.05),
                   outage_base=0.1, outage_cap=0.5, stop_grace=2.0)
CONDITIONS = [{"conditions": [{"field": "total_spent", "op": "gte", "value": 1}]}]


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    # A short session: Tansu rebalances a restarted member only after the old one expires.
    return settings.with_changes(secret_key=SecretStr("s" * 40), session_timeout_ms=3000)


async def setup_target(
    settings: Settings, redis: Redis, harness: Harness, segment: str | None = "VIP",
    segment_id: str = "seg-vip",
) -> tuple[str, str | None]:
    """Topics, a synced profile and a segment whose auto_responder points at the fake."""
    await create_topics(settings)
    assert settings.secret_key is not None
    store = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value())
    list_id, segments = harness.seed_list("Shop", *([segment] if segment else []))
    profile = await store.create("shop", harness.provider, harness.fake.credentials(),
                                 harness.base_url)
    await store.sync_lists(profile.id)
    target = {"profile_id": profile.id, "list_id": list_id}
    if segment:
        target["segment_id"] = segments[segment]
    assert await store.target_problems(target) == []
    await DefinitionStore(redis, settings.key_prefix).put(
        segment_id, {"name": segment_id, "groups": CONDITIONS, "auto_responder": target})
    return list_id, target.get("segment_id")


def change(segment: str, customer: str, added: bool, *, email: str | None = "",
           event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or uuid.uuid4().hex,
        "type": "segment.member_added" if added else "segment.member_removed",
        "segment_id": segment, "segment_version": 1, "customer_id": customer,
        "email": f"{customer}@shop.test" if email == "" else email,
        "changed_at": "2026-11-28T17:32:00.120Z", "reason": "event",
    }


async def send(settings: Settings, changes: Sequence[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        topic = TopicNames(settings.topic_prefix).membership
        futures = [await producer.send(topic, orjson.dumps(c), key=c["customer_id"].encode())
                   for c in changes]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def worker(
    settings: Settings, redis: Redis, options: SyncOptions = FAST
) -> AsyncIterator[tuple[SyncCounters, asyncio.Task[None]]]:
    stop, counters = asyncio.Event(), SyncCounters()
    task = asyncio.create_task(run_sync(settings, redis, stop, options=options,
                                        counters=counters,
                                        limits=ProviderLimits(FAST_POLICIES)))
    try:
        yield counters, task
    finally:
        stop.set()
        await task


async def all_committed(settings: Settings) -> bool:
    assert settings.kafka_bootstrap
    topic = TopicNames(settings.topic_prefix).membership
    tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
    ends = await high_watermarks(settings.kafka_bootstrap, tps)
    done = await committed_offsets(settings.kafka_bootstrap, f"{settings.group_id}-sync", tps)
    return all((done[tp] or 0) == ends[tp] for tp in tps)


def until(harness: Harness, task: asyncio.Task[None], check: Any) -> Any:
    async def probe() -> bool:
        if task.done():
            task.result()
        await harness.settle()
        return bool(check())
    return probe


def final_members(changes: Sequence[dict[str, Any]]) -> dict[str, bool]:
    state: dict[str, bool] = {}
    for c in changes:
        state[c["email"]] = c["type"] == "segment.member_added"
    return state


@pytest.mark.parametrize("provider", ["mailchimp", "sendlane"])
async def test_adds_removes_coalesced_and_duplicates_reach_the_provider(
    sync_settings: Settings, redis_client: Redis, provider: str, mailchimp: Harness,
    sendlane: Harness,
) -> None:
    harness = mailchimp if provider == "mailchimp" else sendlane
    list_id, vip = await setup_target(sync_settings, redis_client, harness)
    await DefinitionStore(redis_client, sync_settings.key_prefix).put(
        "no-responder", {"name": "plain", "groups": CONDITIONS})
    dup = change("seg-vip", "c4", True)
    changes = [
        change("seg-vip", "c1", True), change("seg-vip", "c2", True),
        change("seg-vip", "c3", True), change("seg-vip", "c3", False),  # coalesces
        dup, dup,  # the same change twice
        change("no-responder", "c9", True),  # skipped: no auto_responder
        change("seg-vip", "c2", False),
    ]
    await send(sync_settings, changes)
    assert vip is not None
    want = {"c1@shop.test", "c4@shop.test"}
    async with worker(sync_settings, redis_client) as (counters, task):
        emails = [f"c{i}@shop.test" for i in range(1, 5)]
        await wait_for(until(harness, task, lambda: {
            e for e in emails if harness.in_segment(list_id, vip, e)} == want),
            timeout=30, what="segment to hold c1 and c4")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        # later changes flow too: c1 leaves
        await send(sync_settings, [change("seg-vip", "c1", False)])
        await wait_for(until(harness, task, lambda: not harness.in_segment(
            list_id, vip, "c1@shop.test")), what="c1 removed")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    assert counters.skipped == 1 and counters.duplicates >= 1 and counters.dead_lettered == 0
    assert harness.in_segment(list_id, vip, "c4@shop.test")
    assert not harness.in_segment(list_id, vip, "c9@shop.test")
    assert harness.resubscribes() == 0


async def test_removal_without_segment_takes_members_off_the_list(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    list_id, _ = await setup_target(sync_settings, redis_client, mailchimp, segment=None)
    changes = [change("seg-vip", f"l{i}", True) for i in range(6)]
    changes += [change("seg-vip", f"l{i}", False) for i in range(3)]
    await send(sync_settings, changes)
    async with worker(sync_settings, redis_client) as (_, task):
        await wait_for(until(mailchimp, task, lambda: [
            i for i in range(6) if mailchimp.on_list(list_id, f"l{i}@shop.test")] == [3, 4, 5]),
            what="l3..l5 on the list")
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    # taken off, never unsubscribed
    assert mailchimp.subscribed(list_id, "l0@shop.test") or not mailchimp.on_list(
        list_id, "l0@shop.test")
    assert mailchimp.resubscribes() == 0


async def test_429_and_5xx_storms_are_absorbed(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    list_id, vip = await setup_target(sync_settings, redis_client, mailchimp)
    assert vip is not None
    changes = [change("seg-vip", f"s{i}", True) for i in range(40)]
    changes += [change("seg-vip", f"s{i}", False) for i in range(0, 40, 3)]
    await send(sync_settings, changes)
    mailchimp.fake.faults.rate_429 = 0.35
    mailchimp.fake.faults.rate_5xx = 0.25
    want = final_members(changes)
    async with worker(sync_settings, redis_client) as (counters, task):
        await wait_for(lambda: all_committed(sync_settings), timeout=40,
                       what="every change confirmed and committed")
        mailchimp.fake.faults.__init__()
        assert not task.done()
    got = {e: mailchimp.in_segment(list_id, vip, e) for e in want}
    assert got == want
    assert mailchimp.fake.stats["rate_limited"] > 0 and mailchimp.fake.stats["server_errors"] > 0
    assert counters.retries > 0 and counters.dead_lettered == 0


async def test_permanent_failures_and_missing_emails_go_to_the_dlq_without_blocking(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    list_id, vip = await setup_target(sync_settings, redis_client, mailchimp)
    assert vip is not None
    mailchimp.fake.state.compliance_emails.add("gone@shop.test")
    changes = [change("seg-vip", "ok1", True),
               change("seg-vip", "gone", True, email="gone@shop.test"),
               change("seg-vip", "anon", True, email=None),
               change("seg-vip", "ok2", True)]
    await send(sync_settings, changes)
    async with worker(sync_settings, redis_client) as (counters, _task):
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
    assert {e for e in ("ok1@shop.test", "ok2@shop.test") if mailchimp.in_segment(
        list_id, vip, e)} == {"ok1@shop.test", "ok2@shop.test"}
    assert not mailchimp.on_list(list_id, "gone@shop.test")
    dlq = await read_topic(sync_settings, TopicNames(sync_settings.topic_prefix).dlq, 2)
    by_customer = {orjson.loads(r.value)["customer_id"]: dict(r.headers) for r in dlq}
    assert set(by_customer) == {"gone", "anon"}
    assert b"Member In Compliance State" in by_customer["gone"][
        "__connect.errors.exception.message"]
    assert by_customer["gone"]["segstream.error.stage"] == b"sync"
    assert by_customer["anon"]["segstream.error.code"] == b"missing_email"
    assert by_customer["gone"]["__connect.errors.topic"] == TopicNames(
        sync_settings.topic_prefix).membership.encode()
    assert counters.dead_lettered == 2 and counters.synced == 2


async def test_outage_pauses_without_committing_then_recovers(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    list_id, vip = await setup_target(sync_settings, redis_client, mailchimp)
    assert vip is not None
    mailchimp.fake.faults.rate_5xx = 1.0  # the provider is down
    changes = [change("seg-vip", f"o{i}", True) for i in range(10)]
    await send(sync_settings, changes)
    options = dataclasses.replace(FAST, max_attempts=2)
    async with worker(sync_settings, redis_client, options) as (counters, task):
        await wait_for(lambda: asyncio.sleep(0, counters.outages >= 2), what="outages")
        assert not await all_committed(sync_settings)
        requests = mailchimp.fake.stats["requests"]
        await asyncio.sleep(0.5)
        # held with a growing delay (capped at 0.5 s): a handful of calls, not a spin
        assert mailchimp.fake.stats["requests"] - requests < 20
        mailchimp.fake.faults.rate_5xx = 0.0
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")
        assert not task.done()
    assert all(mailchimp.in_segment(list_id, vip, c["email"]) for c in changes)
    assert counters.synced == 10


async def test_stopped_mid_batch_then_restarted_loses_nothing(
    sync_settings: Settings, redis_client: Redis, activecampaign: Harness
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, activecampaign, "Buyers")
    assert tag is not None
    activecampaign.fake.faults.latency = 0.02  # slow enough to stop in the middle
    changes = [change("seg-vip", f"r{i}", True) for i in range(30)]
    changes += [change("seg-vip", f"r{i}", False) for i in range(0, 30, 4)]
    await send(sync_settings, changes)
    options = dataclasses.replace(FAST, stop_grace=0.0, batch_max=10)
    async with worker(sync_settings, redis_client, options) as (counters, _):
        await wait_for(lambda: asyncio.sleep(0, counters.synced >= 3), what="some synced")
    assert not await all_committed(sync_settings)
    activecampaign.fake.faults.latency = 0.0
    async with worker(sync_settings, redis_client) as _:
        await wait_for(lambda: all_committed(sync_settings), what="offsets committed")

    want = final_members(changes)
    assert {e: activecampaign.in_segment(list_id, tag, e) for e in want} == want
    assert activecampaign.resubscribes() == 0
