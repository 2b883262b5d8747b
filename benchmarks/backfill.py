"""Backfill benchmark: how long a new segment takes to cover every stored customer.

A benchmark, not a test: it prints figures next to their target and never asserts.

    python benchmarks/backfill.py                     # 1,000,000 customers (~3 min to build)
    python benchmarks/backfill.py --customers 100000  # quick run

Customer states are built with the real reducers (a profile event and two orders each) and written
straight into Redis partition hashes, as a processor would have left them. Then a processor
(`python -m streams.cli process`) starts, a segment is created, and the backfill is timed until
every partition records the new definition set. Live events are produced at `--live-rate`
during the backfill; the live rate the processor kept up meanwhile is printed beside it.
Target: <= 30 s for 1M customers on one processor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from segments.events import decode_event
from segments.features import apply_event, encode_state, new_state
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.storage.client import connect_redis
from streams.storage.definitions import DefinitionStore
from streams.storage.state import PartitionKeys, StateStore

SEGMENT = {"name": "Spent 150+ in the US", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 150},
    {"field": "billing_country", "op": "eq", "value": "US"}]}]}
COUNTRIES = ("US", "CA", "GB", "DE")


def customer_events(n: int, at: datetime) -> list[bytes]:
    when = at.isoformat().replace("+00:00", "Z")
    cid = f"c-{n:07d}"
    return [orjson.dumps(e) for e in (
        {"event_id": f"{cid}-p", "type": "customer.created", "occurred_at": when,
         "customer_id": cid, "data": {"email": f"{cid}@example.com",
                                      "billing": {"country": COUNTRIES[n % 4]}}},
        *({"event_id": f"{cid}-o{k}", "type": "order.placed", "occurred_at": when,
           "customer_id": cid, "data": {"order_id": f"{cid}-{k}", "total": 40 + n % 100}}
          for k in range(2)),
    )]


async def build_states(redis: Redis, prefix: str, customers: int, partitions: int) -> None:
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    chunk: dict[int, dict[Any, bytes]] = {}  # Any: redis-py's mapping keys are invariant
    for n in range(customers):
        state = new_state()
        for raw in customer_events(n, now - timedelta(days=1)):
            apply_event(state, decode_event(raw), now_ms)
        cid = f"c-{n:07d}"
        chunk.setdefault(owner_partition(cid, partitions), {})[cid] = encode_state(state)
        if (n + 1) % 20_000 == 0 or n + 1 == customers:
            async with redis.pipeline(transaction=False) as pipe:
                for p, states in chunk.items():
                    pipe.hset(PartitionKeys(prefix, p).state, mapping=states)
                await pipe.execute()
            chunk = {}
            print(f"  built {n + 1:,} states", flush=True)
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):  # "backfilled with no definitions": nothing to backfill yet
            pipe.hset(PartitionKeys(prefix, p).meta, mapping={"definitions": ""})
        await pipe.execute()


@contextlib.asynccontextmanager
async def services(run_dir: Path) -> AsyncIterator[tuple[str, str]]:
    kafka = os.environ.get("SEGSTREAM_KAFKA_BOOTSTRAP")
    redis = os.environ.get("SEGSTREAM_REDIS_URL")
    if kafka and redis:
        yield kafka, redis
        return
    async with EmbeddedServices(run_dir) as svc:
        yield svc.kafka_bootstrap, svc.redis_url


async def backfilled(redis: Redis, prefix: str, partitions: int, mark: str) -> int:
    done = 0
    for p in range(partitions):
        meta = cast(bytes | None, await redis.hget(PartitionKeys(prefix, p).meta, "definitions"))
        done += mark in (meta or b"").decode().split(",")
    return done


async def applied_offsets(redis: Redis, prefix: str, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        offsets = await redis.hgetall(PartitionKeys(prefix, p).offsets)
        total += sum(int(v) for v in offsets.values())
    return total


async def live_traffic(bootstrap: str, topics: TopicNames, rate: int, stop: asyncio.Event) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                n = 10_000_000 + sent
                await producer.send(topics.customers, customer_events(n, datetime.now(UTC))[0],
                                    key=f"c-{n:07d}".encode())
                sent += 1
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def main(args: argparse.Namespace) -> None:
    prefix, partitions = f"bf{os.getpid()}", args.partitions
    topics = TopicNames(f"{prefix}.")
    with tempfile.TemporaryDirectory() as tmp:
        async with services(Path(tmp)) as (bootstrap, redis_url):
            await ensure_topics(bootstrap, topics, partitions, 1)
            redis = connect_redis(redis_url)
            try:
                t0 = time.monotonic()
                await build_states(redis, prefix, args.customers, partitions)
                print(f"built {args.customers:,} customer states in {time.monotonic() - t0:.1f} s")
                await run_backfill(args, bootstrap, redis_url, redis, prefix, topics, Path(tmp))
            finally:
                await redis.aclose()


async def run_backfill(
    args: argparse.Namespace, bootstrap: str, redis_url: str, redis: Redis, prefix: str,
    topics: TopicNames, tmp: Path,
) -> None:
    env = {**os.environ, "SEGSTREAM_KAFKA_BOOTSTRAP": bootstrap, "SEGSTREAM_REDIS_URL": redis_url,
           "SEGSTREAM_TOPIC_PREFIX": topics.prefix, "SEGSTREAM_KEY_PREFIX": prefix,
           "SEGSTREAM_GROUP_ID": f"{prefix}-processor",
           "SEGSTREAM_PARTITIONS": str(args.partitions),
           "SEGSTREAM_API_TOKEN": "bench", "SEGSTREAM_SECRET_KEY": "b" * 32}
    log = tmp / "processor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "process"], env=env,  # noqa: ASYNC220
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            while "assigned partitions" not in log.read_text():  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await measure(args, bootstrap, redis, prefix, topics)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def measure(
    args: argparse.Namespace, bootstrap: str, redis: Redis, prefix: str, topics: TopicNames
) -> None:
    stop = asyncio.Event()
    traffic = asyncio.create_task(live_traffic(bootstrap, topics, args.live_rate, stop))
    await asyncio.sleep(1.0)
    offsets_before = await applied_offsets(redis, prefix, args.partitions)
    started = time.monotonic()
    definition = await DefinitionStore(redis, prefix).put("bench-big-us", SEGMENT)
    mark = f"{definition.id}@{definition.version}"
    while await backfilled(redis, prefix, args.partitions, mark) < args.partitions:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - started
    applied_live = await applied_offsets(redis, prefix, args.partitions) - offsets_before
    stop.set()
    sent = await traffic
    members = await StateStore(redis, prefix).member_count(args.partitions, definition.id)
    per_million = seconds * 1_000_000 / args.customers
    print()
    print(f"{'figure':<58} {'value':>16}   target")
    print(f"{'customers backfilled':<58} {args.customers:>16,}")
    print(f"{'backfill time':<58} {seconds:>14.1f} s")
    print(f"{'backfill rate':<58} {args.customers / seconds:>12,.0f} /s")
    verdict = "PASS" if per_million <= 30 else "MISS"
    print(f"{'backfill time for 1M customers (scaled if fewer)':<58} {per_million:>14.1f} s"
          f"   <= 30 s  {verdict}")
    print(f"{'members of the new segment':<58} {members:>16,}")
    print(f"{'live events applied during the backfill':<58} {applied_live:>16,}"
          f"   ({applied_live / seconds:,.0f}/s; produced {sent:,} at {args.live_rate:,}/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--live-rate", type=int, default=2000, help="live events per second")
    asyncio.run(main(parser.parse_args()))
