"""Timers benchmark: how late time alone changes memberships, with 1M timers scheduled.

A benchmark, not a test: it prints figures next to their target and never asserts.

    python benchmarks/timers.py                                  # 1,000,000 customers
    python benchmarks/timers.py --customers 100000 --spread 60   # quick run

Two segments are defined: "ordered within 30 days" (`last_order_at within_last 30 days`) and "no
order in 30 days" (`not_within_last`). Each customer's state is built with the real reducers
from one `order.placed`, placed so that it leaves the 30-day window at an instant spread
uniformly over `--spread` seconds. The instants are fixed before the build, from a generous
estimate of its duration, so that the first is due some time (about `LEAD_S` or more; the table
shows how long) after the processor is up. States,
membership masks and counts go into the Redis partition hashes as `StateStore.commit` writes
them, with the partitions' definitions fingerprint (no backfill is planned); then the timers
(`SegmentIndex.next_change` of each state) are added to the partitions' timers sets, and Redis
`used_memory` is read before and after those ZADDs alone.

Then a processor (`python -m streams.cli process`) starts and fires them while order events of
other (new) customers are produced at `--live-rate`. Lateness of a time flip is the Kafka
timestamp of its membership record (create time, set by the processor's producer) less its
customer's due instant; each customer should flip twice (removed from the first segment, added
to the second), and the percentiles are over flips. Target: p99 <= 1 s at 1M scheduled. The
live events the processor applied meanwhile are read from the offsets it commits to Redis. Late
flips are listed by when they were due, and the CPU the whole machine and the processor used
while timers fired is shown: the machine is shared with the broker and Redis (and whatever else
runs on it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from segments.evaluator import SegmentIndex
from segments.events import decode_event
from segments.features import apply_event, encode_state, ms_to_rfc3339, new_state
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames, ensure_topics, high_watermarks
from streams.local.embedded import EmbeddedServices
from streams.storage.client import connect_redis
from streams.storage.definitions import DefinitionSet, DefinitionStore
from streams.storage.state import PartitionKeys, PartitionWrite, StateStore

DAY_MS: Final = 86_400_000
WINDOW_MS: Final = 30 * DAY_MS
SEGMENTS: Final = {
    "bench-ordered-30d": {"name": "ordered within 30 days", "groups": [{"conditions": [
        {"field": "last_order_at", "op": "within_last", "value": {"days": 30}}]}]},
    "bench-no-order-30d": {"name": "no order in 30 days", "groups": [{"conditions": [
        {"field": "last_order_at", "op": "not_within_last", "value": {"days": 30}}]}]},
}
LEAD_S: Final = 20.0
"""The first timer is due this long after the processor is expected to be up."""
BUILD_S_PER_CUSTOMER: Final = 30e-6
"""A generous estimate of building, committing and scheduling one customer (with the start of
the services and the processor), to place the due instants after all of it is done. A build
that ends early waits; one that ends late shows as "processor up before the first due"."""
CHUNK: Final = 20_000
LIVE_BASE: Final = 10_000_000
"""Live customers are numbered from here: new ids, no timer due during the run."""
TARGET_P99_MS: Final = 1000


@dataclass(frozen=True)
class Schedule:
    """When each scheduled customer's "ordered within 30 days" ends."""

    customers: int
    first_due_ms: int
    spread_ms: int

    def due(self, n: int) -> int:
        return self.first_due_ms + n * self.spread_ms // self.customers

    @property
    def last_due_ms(self) -> int:
        return self.due(self.customers - 1)


def customer_id(n: int) -> str:
    return f"c-{n:07d}"


def order_event(n: int, at_ms: int) -> bytes:
    cid = customer_id(n)
    return orjson.dumps({
        "event_id": f"{cid}-o1", "type": "order.placed", "occurred_at": ms_to_rfc3339(at_ms),
        "customer_id": cid, "data": {"order_id": f"{cid}-1", "total": 40 + n % 100}})


@dataclass
class Built:
    timers: dict[int, dict[str, int]] = field(default_factory=dict)
    """partition -> customer -> due ms (`SegmentIndex.next_change` of the built state)."""
    differ: int = 0
    """Customers whose next_change is not the planned due instant."""
    members: dict[str, int] = field(default_factory=dict)


async def build_states(store: StateStore, definitions: DefinitionSet, schedule: Schedule,
                       partitions: int) -> Built:
    """States, masks, counts and the definitions fingerprint, committed as the processor would;
    the timers are returned, not written."""
    index = SegmentIndex(definitions.live.values())
    slots = {d.slot: d.id for d in definitions.live.values()}
    built = Built(timers={p: {} for p in range(partitions)})
    now_ms = int(time.time() * 1000)
    writes: dict[int, PartitionWrite] = {}
    for p in range(partitions):
        writes[p] = PartitionWrite(meta={"definitions": definitions.fingerprint()})
    for n in range(schedule.customers):
        cid, due = customer_id(n), schedule.due(n)
        state = new_state()
        apply_event(state, decode_event(order_event(n, due - WINDOW_MS - 1)), now_ms,
                    index.horizon_ms)
        state.segments_mask = mask = index.evaluate_all(state, now_ms)
        p = owner_partition(cid, partitions)
        write = writes.setdefault(p, PartitionWrite())
        write.put_state(cid, encode_state(state))
        write.set_mask(cid, mask)
        for slot, segment_id in slots.items():
            if mask >> slot & 1:
                write.count(segment_id, 1)
                built.members[segment_id] = built.members.get(segment_id, 0) + 1
        at = index.next_change(state, now_ms)
        if at is None or at != due:
            built.differ += 1
        if at is not None:
            built.timers[p][cid] = at
        if (n + 1) % CHUNK == 0 or n + 1 == schedule.customers:
            await store.commit_many(writes)
            writes = {}
            if (n + 1) % (10 * CHUNK) == 0 or n + 1 == schedule.customers:
                print(f"  built {n + 1:,} states", flush=True)
    return built


async def used_memory(redis: Redis) -> tuple[int, int]:
    """Redis `used_memory` and, within it, client connection buffers (`mem_clients_normal`)."""
    info = await redis.info("memory")
    return int(info["used_memory"]), int(info["mem_clients_normal"])


async def add_timers(redis: Redis, prefix: str, timers: dict[int, dict[str, int]]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for p, due in timers.items():
            items = list(due.items())
            for start in range(0, len(items), 1000):
                pipe.zadd(PartitionKeys(prefix, p).timers, dict(items[start:start + 1000]))
        await pipe.execute()


async def due_left(redis: Redis, prefix: str, partitions: int, until_ms: int) -> int:
    """Timers due at or before `until_ms` still scheduled (not fired and committed)."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.zcount(PartitionKeys(prefix, p).timers, "-inf", until_ms)
        counts: list[int] = await pipe.execute()
    return sum(counts)


async def applied_offsets(redis: Redis, prefix: str, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        offsets = await redis.hgetall(PartitionKeys(prefix, p).offsets)
        total += sum(int(v) for v in offsets.values())
    return total


@contextlib.asynccontextmanager
async def services(run_dir: Path) -> AsyncIterator[tuple[str, str]]:
    kafka = os.environ.get("SEGSTREAM_KAFKA_BOOTSTRAP")
    redis = os.environ.get("SEGSTREAM_REDIS_URL")
    if kafka and redis:
        yield kafka, redis
        return
    async with EmbeddedServices(run_dir) as svc:
        yield svc.kafka_bootstrap, svc.redis_url


@dataclass
class Live:
    """Order events of new customers produced at a steady rate until `stop`."""

    rate: int
    sent: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, bootstrap: str, topics: TopicNames) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        started, base = time.monotonic(), self.sent
        try:
            while not self.stop.is_set():
                due = base + int((time.monotonic() - started) * self.rate)
                while self.sent < due:
                    n = LIVE_BASE + self.sent
                    await producer.send(topics.orders, order_event(n, int(time.time() * 1000)),
                                        key=customer_id(n).encode())
                    self.sent += 1
                await asyncio.sleep(0.01)
            await producer.flush()
        finally:
            await producer.stop()


@dataclass
class Flips:
    """The time flips read back from the membership topic."""

    lateness: list[int] = field(default_factory=list)
    """Kafka timestamp less due, ms, per time flip of a scheduled customer."""
    fired_late: list[int] = field(default_factory=list)
    """`changed_at` (the processor's now when it fired) less due, ms, per time flip."""
    by_second: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    """second of the due instant after the first due -> (max lateness, its changed_at less
    due, flips later than the target), to see when the late ones were due."""
    per_customer: bytearray = field(default_factory=bytearray)
    other_time: int = 0
    event_flips: int = 0
    records: int = 0


async def read_flips(bootstrap: str, topics: TopicNames, partitions: int, schedule: Schedule
                     ) -> Flips:
    flips = Flips(per_customer=bytearray(schedule.customers))
    tps = [TopicPartition(topics.membership, p) for p in range(partitions)]
    ends = await high_watermarks(bootstrap, tps)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=20, max_partition_fetch_bytes=8 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    stamps: dict[str, int] = {}
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        left = {tp for tp in tps if ends.get(tp, 0) > 0}
        while left:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                for record in records:
                    flips.records += 1
                    note_flip(flips, orjson.loads(record.value), record.timestamp, schedule,
                              stamps)
                if records and records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
    finally:
        await consumer.stop()
    return flips


def note_flip(flips: Flips, change: dict[str, Any], stamp: int, schedule: Schedule,
              stamps: dict[str, int]) -> None:
    if change["reason"] != "time":
        flips.event_flips += change["reason"] == "event"
        return
    n = int(change["customer_id"][2:])
    if n >= schedule.customers:
        flips.other_time += 1
        return
    due = schedule.due(n)
    changed_at = change["changed_at"]
    fired = stamps.get(changed_at)
    if fired is None:
        fired = stamps[changed_at] = int(datetime.fromisoformat(changed_at).timestamp() * 1000)
    late = stamp - due
    flips.lateness.append(late)
    flips.fired_late.append(fired - due)
    flips.per_customer[n] = min(255, flips.per_customer[n] + 1)
    second = (due - schedule.first_due_ms) // 1000
    worst, its_fired, over = flips.by_second.get(second, (late, fired - due, 0))
    if late >= worst:
        worst, its_fired = late, fired - due
    flips.by_second[second] = (worst, its_fired, over + (late > TARGET_P99_MS))


def late_spells(by_second: dict[int, tuple[int, int, int]]
                ) -> list[tuple[int, int, int, int, int]]:
    """Runs of consecutive due seconds with a flip later than the target: (first second, last
    second, max lateness, its changed_at less due, flips later than the target)."""
    spells: list[tuple[int, int, int, int, int]] = []
    for second in sorted(by_second):
        worst, its_fired, over = by_second[second]
        if not over:
            continue
        if spells and spells[-1][1] == second - 1:
            first, _, top, top_fired, count = spells[-1]
            if worst > top:
                top, top_fired = worst, its_fired
            spells[-1] = (first, second, top, top_fired, count + over)
        else:
            spells.append((second, second, worst, its_fired, over))
    return spells


def percentile(values: list[int], q: float) -> int:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0


async def main(args: argparse.Namespace) -> None:
    prefix, partitions = f"tm{os.getpid()}", args.partitions
    topics = TopicNames(f"{prefix}.")
    started = time.time()
    # the due instants are fixed before the build: far enough for all of it (see BUILD_S_...)
    first_due_ms = int((started + args.customers * BUILD_S_PER_CUSTOMER + 15 + LEAD_S) * 1000)
    schedule = Schedule(args.customers, first_due_ms, int(args.spread * 1000))
    with tempfile.TemporaryDirectory() as tmp:
        async with services(Path(tmp)) as (bootstrap, redis_url):
            await ensure_topics(bootstrap, topics, partitions, 1)
            redis = connect_redis(redis_url)
            try:
                definition_store = DefinitionStore(redis, prefix)
                for segment_id, body in SEGMENTS.items():
                    await definition_store.put(segment_id, body)
                definitions = await definition_store.load()
                store = StateStore(redis, prefix)
                t0 = time.monotonic()
                built = await build_states(store, definitions, schedule, partitions)
                build_s = time.monotonic() - t0
                print(f"built {args.customers:,} customer states in {build_s:.1f} s")
                before = await used_memory(redis)
                await add_timers(redis, prefix, built.timers)
                after = await used_memory(redis)
                scheduled = await store.timer_count(partitions)
                print(f"scheduled {scheduled:,} timers")
                figures = Figures(args, schedule, built, build_s, before, after, scheduled)
                built.timers = {}
                await run_processor(args, bootstrap, redis_url, redis, prefix, topics,
                                    Path(tmp), figures)
                figures.flips = await read_flips(bootstrap, topics, partitions, schedule)
            finally:
                await redis.aclose()
    figures.show()


@dataclass
class Figures:
    args: argparse.Namespace
    schedule: Schedule
    built: Built
    build_s: float
    before: tuple[int, int]
    after: tuple[int, int]
    scheduled: int
    up_before_due_s: float = 0.0
    window_s: float = 0.0
    left: int = 0
    applied_live: int = 0
    sent_live: int = 0
    behind_at_start: int = 0
    behind_at_end: int = 0
    cpu: tuple[float, float] | None = None
    """CPU seconds of the machine and of the processor while timers fired."""
    flips: Flips = field(default_factory=Flips)
    log_lines: list[str] = field(default_factory=list)

    def show(self) -> None:
        args, flips, n = self.args, self.flips, self.schedule.customers
        delta = (self.after[0] - self.after[1]) - (self.before[0] - self.before[1])
        late = sorted(flips.lateness)
        fired = sorted(flips.fired_late)
        twice = sum(1 for c in flips.per_customer if c == 2)
        p99 = percentile(late, 0.99)
        verdict = "PASS" if p99 <= TARGET_P99_MS and n >= 1_000_000 else (
            "MISS" if p99 > TARGET_P99_MS else "(fewer than 1M scheduled)")
        rows = [
            ("customers scheduled (timers in Redis)", f"{self.scheduled:,}", ""),
            ("timers differing from SegmentIndex.next_change", f"{self.built.differ:,}", "0"),
            ("Redis per timer (used_memory delta less client buffers)",
             f"{delta / max(1, self.scheduled):,.0f} B",
             f"({delta:,} B; used_memory delta {self.after[0] - self.before[0]:,} B)"),
            ("processor up before the first due", f"{self.up_before_due_s:,.1f} s", "> 0"),
            ("due instants spread over", f"{args.spread:,.0f} s",
             f"({n / args.spread:,.0f} timers/s)"),
            ("timers fired (out of scheduled)", f"{n - self.left:,}", f"{n:,}"),
            ("time flips seen", f"{len(late):,}", f"{2 * n:,} (2 per customer)"),
            ("customers with exactly 2 time flips", f"{twice:,}", f"{n:,}"),
            ("lateness p50 (record timestamp - due)", f"{percentile(late, 0.5):,} ms", ""),
            ("lateness p99", f"{p99:,} ms", f"<= {TARGET_P99_MS:,} ms  {verdict}"),
            ("lateness max", f"{late[-1] if late else 0:,} ms", ""),
            ("fired late p50 / p99 / max (changed_at - due)",
             f"{percentile(fired, 0.5):,} / {percentile(fired, 0.99):,} / "
             f"{fired[-1] if fired else 0:,} ms", ""),
            ("live events applied while timers fired",
             f"{self.applied_live / max(self.window_s, 1e-9):,.0f} /s",
             f"{self.sent_live / max(self.window_s, 1e-9):,.0f} /s produced "
             f"({self.applied_live:,} of {self.sent_live:,} in {self.window_s:,.1f} s; "
             f"--live-rate {args.live_rate:,})"),
            ("live events produced, not applied yet: at the first due / end",
             f"{self.behind_at_start:,} / {self.behind_at_end:,}", ""),
        ]
        print()
        print(f"{'figure':<58} {'value':>20}   target")
        for name, value, target in rows:
            print(f"{name:<58} {value:>20}   {target}")
        print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; command: "
              f"python {shlex.join(sys.argv)}")
        if self.cpu is not None:
            cpus, window = os.cpu_count() or 1, max(self.window_s, 1e-9)
            print(f"CPU while timers fired: machine {self.cpu[0] / window / cpus:.0%} of "
                  f"{cpus} CPUs busy (every process), processor "
                  f"{self.cpu[1] / window:.0%} of one CPU")
        print(f"build {self.build_s:.1f} s; membership records read {flips.records:,} "
              f"({flips.event_flips:,} reason event, {flips.other_time:,} time flips of "
              "other customers)")
        print(f"spells of flips later than {TARGET_P99_MS:,} ms, by due instant (s after the "
              "first due): max lateness (its changed_at - due), flips that late")
        for first, last, worst, its_fired, over in late_spells(flips.by_second):
            print(f"  +{first:>4}..+{last + 1:<4} s  {worst:>7,} ms ({its_fired:,} ms)  "
                  f"{over:>8,}")
        if self.log_lines:
            print("processor log (warnings and errors):")
            for line in self.log_lines[-20:]:
                print(f"  {line}")


async def run_processor(
    args: argparse.Namespace, bootstrap: str, redis_url: str, redis: Redis, prefix: str,
    topics: TopicNames, tmp: Path, figures: Figures,
) -> None:
    env = {**os.environ, "SEGSTREAM_KAFKA_BOOTSTRAP": bootstrap, "SEGSTREAM_REDIS_URL": redis_url,
           "SEGSTREAM_TOPIC_PREFIX": topics.prefix, "SEGSTREAM_KEY_PREFIX": prefix,
           "SEGSTREAM_GROUP_ID": f"{prefix}-processor",
           "SEGSTREAM_PARTITIONS": str(args.partitions),
           "SEGSTREAM_API_TOKEN": "bench", "SEGSTREAM_SECRET_KEY": "b" * 32}
    log: Path = args.log or tmp / "processor.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "process"], env=env,  # noqa: ASYNC220
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            while "assigned partitions" not in await asyncio.to_thread(log.read_text):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await measure(args, bootstrap, redis, prefix, topics, figures, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = await asyncio.to_thread(log.read_text)
    figures.log_lines = [line for line in text.splitlines()
                         if "WARNING" in line or "ERROR" in line or "Traceback" in line]


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """CPU seconds used by the whole machine (all processes, every CPU) and by `pid`, from
    /proc (Linux; None elsewhere): the machine is shared with the broker and Redis, and with
    whatever else runs on it."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        with open(f"/proc/{pid}/stat") as own:
            mine = own.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - fields[4]  # less idle and iowait
    return busy / tick, (int(mine[11]) + int(mine[12])) / tick


async def measure(args: argparse.Namespace, bootstrap: str, redis: Redis, prefix: str,
                  topics: TopicNames, figures: Figures, pid: int) -> None:
    schedule = figures.schedule
    figures.up_before_due_s = schedule.first_due_ms / 1000 - time.time()
    print(f"processor up {figures.up_before_due_s:.1f} s before the first timer is due")
    live = Live(args.live_rate)
    traffic = asyncio.create_task(live.run(bootstrap, topics))
    await asyncio.sleep(max(0.0, schedule.first_due_ms / 1000 - time.time()))
    offsets_before, sent_before = await applied_offsets(redis, prefix, args.partitions), live.sent
    figures.behind_at_start = sent_before - offsets_before
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()
    deadline = schedule.last_due_ms / 1000 + args.grace
    while True:
        left = await due_left(redis, prefix, args.partitions, schedule.last_due_ms)
        if (left == 0 and time.time() * 1000 > schedule.last_due_ms) or time.time() > deadline:
            break
        await asyncio.sleep(0.5)
    figures.window_s = time.monotonic() - started
    offsets_after, sent_after = await applied_offsets(redis, prefix, args.partitions), live.sent
    figures.applied_live = offsets_after - offsets_before
    figures.sent_live = sent_after - sent_before
    figures.behind_at_end = sent_after - offsets_after
    cpu_after = cpu_seconds(pid)
    if cpu_before is not None and cpu_after is not None:
        figures.cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
    figures.left = left
    live.stop.set()
    await traffic
    print(f"timers fired in {figures.window_s:.1f} s; {left:,} left")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--spread", type=float, default=300.0,
                        help="seconds over which the timers are due")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--live-rate", type=int, default=2000, help="live events per second")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds after the last due instant to wait for stragglers")
    parser.add_argument("--log", type=Path, default=None,
                        help="keep the processor's log in this file")
    asyncio.run(main(parser.parse_args()))
