"""Throughput and latency benchmark of the segstream processor, with a plain Faust baseline.

A benchmark, not a test: it prints its figures next to their targets (PASS/MISS), never asserts.

    python benchmarks/throughput.py                          # 200k events/pass, 20k customers
    python benchmarks/throughput.py --events 20000 --customers 2000   # quick smoke run (~2 min)
    python benchmarks/throughput.py --mode latency           # p50/p99 at a fixed 5k events/s
    python benchmarks/throughput.py --mode both --skip-faust --segments 20,50 --profile /tmp/prof

Services: embedded Tansu + Valkey (streams.local.embedded.EmbeddedServices) unless
SEGSTREAM_KAFKA_BOOTSTRAP and SEGSTREAM_REDIS_URL are set. Every scenario gets its own topic
prefix, Redis key prefix and consumer group. Data: `streams.local.traffic.Storefront` with a
fixed seed (same events for every contender), pass after pass for the same customers, event
times spread over the last 60 days, produced with a batched aiokafka producer
before anything is timed.
Segments: `segment_definitions(n)`, mixed numbers, money, countries, product and category sets,
`within_days`, `within_last`/`not_within_last`, custom properties, segment-of-segment.

Throughput mode:

* cold@N for each count N above min(segments), smallest first: pass 1 is produced, then
  `python -m streams.cli process` starts on empty state. Events/s from the processor's start
  (the first observation of its consumer group as Stable: the join is done and it consumes) to
  the last applied event, read every 20 ms from the offsets the processor commits to Redis
  (`<key_prefix>:{p<N>}:offsets`). Redis `used_memory` delta less client connection buffers
  (transient: they hold the last commit payload) / customers, with a MEMORY USAGE breakdown, is
  measured here.
* cold@min(segments) then steady@min(segments): pass 1 as above; then the processor is frozen
  (SIGSTOP, shorter than its session timeout, so it keeps its partitions and warm cache), pass 2
  (new events for the same customers) is produced, the processor resumed (SIGCONT), and only
  pass 2 is timed, from the resume on.
* Faust@min(segments): a faust-streaming worker (child process, fresh group, Faust's defaults)
  over the same pass 1: decode, Redis GET, apply_event, SegmentIndex.evaluate, Redis SET, one
  `topic.send` per membership change. Timed the same way from its committed Kafka offsets, from
  the first commit on (its group join, slow on Tansu, is excluded). Final memberships of both
  are compared customer by customer.

Latency mode: a processor (min(segments)) applies pass 1, then events are produced at `--rate`
for `--duration` s, each stamped (`event_id` = `<id>@<epoch µs>` at send time); the
`segment-membership` topic is read and each change matched to its stamp by `cause_event_id`.
p50/p99 are over membership events, split into queued (stamp -> the processor's `changed_at`),
processing (-> the membership record's timestamp) and delivery (-> received by the reader).
The baseline, a do-nothing forwarder with the same traffic on the same broker, runs before and
after ours: the embedded broker's fetches slow down as it accumulates record batches, so the two
brackets show how much of the figure is the broker's.

CPU% is user+system time over the timed window, 100% = one core: processor(s), Redis server,
broker, this harness, and `other` (the machine's busy time minus those: neighbours, kernel).
Changes/event = records added to `segment-membership` during the pass / events in the pass.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import dataclasses
import gc
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeAlias, cast

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the repository, uninstalled

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from segments.events import TOPIC_OF_TYPE
from segments.features import decode_state
from segments.timeline import TIMELINE_HORIZON_DAYS
from segments.values import MAX_DAYS
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames, ensure_topics, high_watermarks
from streams.local.embedded import EmbeddedServices
from streams.local.traffic import Storefront
from streams.storage.client import connect_redis
from streams.storage.definitions import DefinitionStore
from streams.storage.state import StateStore

ROOT: Final = Path(__file__).resolve().parents[1]
SCRIPT: Final = Path(__file__).resolve()

# -- targets ------------------------------------------------------------------------------------

TARGET_STEADY_EPS: Final = 40_000  # events/s, steady state, 20 segments
TARGET_COLD_EPS: Final = 30_000  # events/s, cold start, 50 segments
TARGET_FAUST_RATIO: Final = 10.0
TARGET_BYTES_PER_CUSTOMER: Final = 1536  # 1.5 KB, 50 segments
TARGET_P99_MS: Final = 50.0  # at 5k events/s

POLL_S: Final = 0.02
STALL_TIMEOUT_S: Final = 90.0  # no progress for this long: the scenario failed
FAUST_JOIN_TIMEOUT_S: Final = 180.0
# The processor keeps its default session timeout (10 s): the SIGSTOP while pass 2 is produced
# must stay shorter (a longer timeout makes the join on Tansu exceed aiokafka's request timeout).
MAX_PAUSE_S: Final = 8.0
DATA_SPAN: Final = timedelta(days=60)  # all passes together span this much event time
SEED: Final = 20261128

LATENCY_PRODUCER_LINGER_MS: Final = 2  # a storefront producer's usual small linger (counted)
LATENCY_READER_FETCH_WAIT_MS: Final = 10  # Tansu holds a fetch this long even when data arrives
_PR_SET_PDEATHSIG: Final = 1


def say(message: str) -> None:
    """Progress on stderr; the figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- segments -----------------------------------------------------------------------------------

_COUNTRY_SETS: Final = (["US"], ["CA", "GB"], ["DE", "FR"], ["AU", "US"], ["GB", "DE", "FR"])
_PRODUCTS: Final = ("p-espresso", "p-filter", "p-grinder", "p-kettle", "p-gold", "p-mug",
                    "p-beans-1kg", "p-scale")
_CATEGORIES: Final = ("coffee", "equipment", "subscription", "merch")
_WINDOW: Final = TIMELINE_HORIZON_DAYS  # the longest `within_days` (366)


def segment_definitions(count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` segments of mixed conditions; the first n of a larger set equal a smaller set.

    Numbers, money, countries, product and category sets, `within_days` windows, `within_last`,
    profile text and custom properties, and segment-of-segment references (always to an earlier
    segment, so any prefix of the list is a valid graph). Windows and durations grow with the
    segment's decade and wrap around before their limits (`within_days` 1..366, durations
    1..3650 days), so every definition is valid at any count; the first 518 never wrap.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        k = i // 10
        kind = i % 10
        seg_id = f"bench-{i:02d}"
        groups: list[list[dict[str, Any]]]
        if kind == 0:
            groups = [[_c("billing_country", "in", _COUNTRY_SETS[k % 5]),
                       _c("order_count", "gte", 2 + k)]]
        elif kind == 1:
            groups = [[_c("total_spent", "gt", f"{150 + 75 * k}.00")],
                      [_c("last_order_total", "gte", 200 + 20 * k)]]
        elif kind == 2:
            groups = [[_c("products_purchased", "includes_any", [_PRODUCTS[k % 8]]),
                       _c("products_purchased", "includes_none", [_PRODUCTS[(k + 3) % 8]])]]
        elif kind == 3:
            groups = [[_c("order_count", "gte", 2 + k, within_days=_wrap(7, 7, k, _WINDOW))]]
        elif kind == 4:
            groups = [[_c("last_order_at", "within_last", {"days": _wrap(2, 1, k, MAX_DAYS)}),
                       _c("contact_type", "eq", "customer")]]
        elif kind == 5:
            groups = [[_c("total_spent", "gte", 100 + 50 * k), _c("order_count", "lte", 8 + k)],
                      [_c("categories_purchased", "includes_all",
                          [_CATEGORIES[k % 4], _CATEGORIES[(k + 1) % 4]])]]
        elif kind == 6:  # builds on earlier segments
            groups = [[_c("segments", "includes_any", [f"bench-{i - 5:02d}", f"bench-{i - 6:02d}"]),
                       _c("billing_country", "eq", "US")]]
        elif kind == 7:
            groups = [[_c("contact_type", "eq", "prospect"),
                       _c("tags", "includes_any", ["newsletter"] if k % 2 == 0 else ["vip"])],
                      [_c("properties.signup_source", "eq", ("web", "pos", "popup")[k % 3]),
                       _c("order_count", "lt", 2)]]
        elif kind == 8:
            groups = [[_c("refund_count", "gte", 1 + k % 2)],
                      [_c("decline_count", "gte", 1, within_days=_wrap(14, 7, k, _WINDOW))],
                      [_c("chargeback_count", "gte", 1)]]
        else:
            groups = [[_c("average_order_value", "between", [40 + 5 * k, 120 + 10 * k]),
                       _c("active_subscriptions", "includes_any", ["p-gold"])],
                      [_c("segments", "includes_all", [f"bench-{i - 8:02d}"]),
                       _c("last_order_at", "not_within_last",
                          {"days": _wrap(10, 1, k, MAX_DAYS)})]]
        body = {"name": f"benchmark segment {i}",
                "groups": [{"conditions": conds} for conds in groups]}
        out.append((seg_id, body))
    return out


def _wrap(first: int, step: int, k: int, limit: int) -> int:
    """`first + step * k` while that stays within `limit`, then around again from `first`."""
    return first + step * (k % ((limit - first) // step + 1))


def _c(field: str, op: str, value: Any, within_days: int | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"field": field, "op": op, "value": value}
    if within_days is not None:
        cond["within_days"] = within_days
    return cond


# -- data ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pass:
    """One pass of input events, encoded: (topic kind, customer id, JSON bytes)."""

    records: list[tuple[str, str, bytes]]
    events: list[dict[str, Any]]
    customers: int
    mix: Counter[str]

    def describe(self) -> str:
        by_topic = Counter(TOPIC_OF_TYPE[t] for t in self.mix.elements())
        refunds = self.mix["order.refunded"] + self.mix["order.chargeback"]
        return (f"{len(self.records)} events ({by_topic['orders']} on orders: "
                f"{self.mix['order.placed']} placed, {refunds} refunds/chargebacks, "
                f"{self.mix['order.declined']} declined; {by_topic['customers']} on customers) "
                f"over {self.customers} customers")


def generate(lengths: list[int], customers: int, keep_dicts: bool = False) -> list[Pass]:
    """Deterministic storefront traffic, one pass per length, each continuing the last, ending
    about now (event times spread over DATA_SPAN)."""
    step = DATA_SPAN / sum(lengths)
    start = datetime.now(UTC) - DATA_SPAN - timedelta(minutes=5)
    shop = Storefront(seed=SEED, customers=customers, start=start)
    out = []
    for length in lengths:
        evs = list(shop.events(length, step=step))
        records = [(TOPIC_OF_TYPE[e["type"]], e["customer_id"], orjson.dumps(e)) for e in evs]
        out.append(Pass(records, evs if keep_dicts else [],
                        len({e["customer_id"] for e in evs}), Counter(e["type"] for e in evs)))
    return out


async def produce_records(
    bootstrap: str, topics: TopicNames, partitions: int, records: Iterable[tuple[str, str, bytes]]
) -> float:
    """Send everything as fast as possible in batches per topic-partition; seconds taken."""
    started = time.perf_counter()
    grouped: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for kind, customer_id, value in records:
        tp = (getattr(topics, kind), owner_partition(customer_id, partitions))
        grouped.setdefault(tp, []).append((customer_id.encode(), value))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0,
                                max_batch_size=512 << 10, max_request_size=4 << 20)
    await producer.start()
    try:
        futures: list[asyncio.Future[Any]] = []
        for (topic, partition), items in grouped.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                if len(futures) >= 64:
                    await asyncio.gather(*futures)
                    futures = []
            if batch.record_count():
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


# -- processes ----------------------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


class Child:
    """A child process we started (processor or Faust worker): pause, resume, stop, CPU."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log_file:
            self.popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent(),
            )
        self.pid = self.popen.pid
        self.process = psutil.Process(self.pid)

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} (pid {self.pid}) exited with code "
                               f"{self.popen.returncode}; last lines of {self.log_path}:\n"
                               f"{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except OSError:
            return 0

    def pause(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGCONT)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say(f"{self.name} ignored SIGTERM for {timeout:g} s; killing pid {self.pid}")
            self.popen.kill()
            self.popen.wait()


Watched: TypeAlias = psutil.Process | list[psutil.Process] | None


class Processors:
    """`--processors N` copies of `segstream process` in one consumer group."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.children]

    @property
    def process(self) -> list[psutil.Process]:
        return [c.process for c in self.children]

    def check(self) -> None:
        for child in self.children:
            child.check()

    def log_count(self, text: str) -> int:
        return sum(c.log_count(text) for c in self.children)

    def pause(self) -> None:
        for child in self.children:
            child.pause()

    def resume(self) -> None:
        for child in self.children:
            child.resume()

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def cpu_seconds(process: Watched) -> float:
    """User+system CPU seconds of a process (or the sum over several)."""
    if process is None:
        return 0.0
    if isinstance(process, list):
        return sum(cpu_seconds(p) for p in process)
    try:
        times = process.cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


class Profiler:
    """Optional py-spy recording of the processor during a timed window (`--profile DIR`)."""

    def __init__(self, directory: Path | None, name: str, pids: Iterable[int]) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for n, pid in enumerate(pids):
            out = directory / f"{name}{'' if n == 0 else f'-{n}'}.txt"
            argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                    "--nonblocking", "-o", str(out)]
            self.popens.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL))
            say(f"py-spy recording {name} (pid {pid}) into {out}")

    def stop(self) -> None:
        for popen in self.popens:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)
        for popen in self.popens:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        self.popens = []


# -- progress -----------------------------------------------------------------------------------


class RedisOffsets:
    """Events applied by our processor: the offsets it commits to Redis with each batch."""

    def __init__(self, redis: Redis, key_prefix: str, partitions: int) -> None:
        self.redis = redis
        self.keys = [f"{key_prefix}:{{p{p}}}:offsets" for p in range(partitions)]

    async def positions(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in self.keys:
                pipe.hgetall(key)
            hashes = await pipe.execute()
        return {k.decode(): int(v) for h in hashes for k, v in h.items()}


class KafkaCommitted:
    """Events a consumer group has committed (for the Faust worker)."""

    def __init__(self, bootstrap: str, group_id: str, tps: list[TopicPartition]) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id,
                                         enable_auto_commit=False)
        self.tps = tps

    async def __aenter__(self) -> KafkaCommitted:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def positions(self) -> dict[str, int]:
        offsets = await asyncio.gather(*(self.consumer.committed(tp) for tp in self.tps))
        return {f"{tp.topic}:{tp.partition}": o for tp, o in zip(self.tps, offsets, strict=True)
                if o is not None}


class GroupStable:
    """Whether a consumer group has finished its join (DescribeGroups says Stable): from then on
    our processor consumes, so a cold start's timed window begins there."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.group_id = group_id

    async def __aenter__(self) -> GroupStable:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def __call__(self) -> bool:
        described = await self.admin.describe_consumer_groups([self.group_id])
        groups = described[0].groups if described else []
        # (error_code, group_id, state, protocol_type, protocol, members)
        return any(group[1] == self.group_id and group[2] == "Stable" for group in groups)


async def already_started() -> bool:
    return True


async def our_masks(redis: Redis, key_prefix: str, partitions: int) -> dict[str, int]:
    """customer id -> segments_mask from our processor's state hashes."""
    out: dict[str, int] = {}
    for p in range(partitions):
        blobs = cast(dict[bytes, bytes], await redis.hgetall(f"{key_prefix}:{{p{p}}}:state"))
        out.update({k.decode(): decode_state(v).segments_mask for k, v in blobs.items()})
    return out


async def faust_masks(redis: Redis, key_prefix: str, customers: list[str]) -> dict[str, int]:
    """customer id -> segments_mask from the Faust baseline's state strings."""
    out: dict[str, int] = {}
    for i in range(0, len(customers), 1000):
        chunk = customers[i:i + 1000]
        keys = [f"{key_prefix}:faust:{c}" for c in chunk]
        blobs = cast(list[bytes | None], await redis.mget(keys))
        out.update({c: decode_state(b).segments_mask for c, b in zip(chunk, blobs, strict=True)
                    if b is not None})
    return out


def applied(positions: dict[str, int], ends: dict[str, int]) -> int:
    return sum(min(positions.get(field, 0), end) for field, end in ends.items())


async def input_ends(bootstrap: str, topics: TopicNames, partitions: int) -> dict[str, int]:
    tps = [TopicPartition(t, p) for t in topics.inputs for p in range(partitions)]
    marks = await high_watermarks(bootstrap, tps)
    return {f"{tp.topic}:{tp.partition}": end for tp, end in marks.items()}


async def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    marks = await high_watermarks(bootstrap, [TopicPartition(topic, p) for p in range(partitions)])
    return sum(marks.values())


@dataclasses.dataclass
class Timed:
    """One timed window: events applied between the first and the last observation."""

    events: int
    seconds: float
    cpu: dict[str, float]  # percent of one core, by process name

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


async def time_until_applied(
    positions: Callable[[], Awaitable[dict[str, int]]],
    ends: dict[str, int],
    processes: dict[str, Watched],
    alive: Callable[[], None],
    poll_s: float = POLL_S,
    first_timeout: float = STALL_TIMEOUT_S,
    started: Callable[[], Awaitable[bool]] | None = None,
) -> Timed:
    """Poll progress until every end offset is reached; the window ends at the observation
    showing everything applied.

    With `started` (our processor: its group has joined, or it was resumed with its partitions)
    the window starts at the first observation where `started()` is true, and every event
    applied from then on counts: none of the processing falls outside the window. Our processor
    commits a backlog in groups of up to a second, so the first commit shows progress only well
    after the work began, and counting from it would read high (docs/design.md, "The throughput
    window starts when our processor starts").

    Without it (the Faust worker, whose progress moves with every event), the window starts at
    the first observation showing progress beyond the starting position, and the events of that
    first commit are left out. When everything lands in one observation the window falls back
    to starting at the previous (idle) observation.
    """
    total = sum(ends.values())
    loop = asyncio.get_running_loop()
    start_n = applied(await positions(), ends)
    if start_n >= total:
        return Timed(0, 0.0, {name: float("nan") for name in processes})
    first: tuple[float, int, dict[str, float]] | None = None
    if started is not None:
        waited_from = loop.time()
        while not await started():
            alive()
            if loop.time() - waited_from > first_timeout:
                raise TimeoutError(f"the processor did not start within {first_timeout:g} s")
            await asyncio.sleep(poll_s)
        first = (loop.time(), applied(await positions(), ends), _cpu(processes))
    prev = first or (loop.time(), start_n, _cpu(processes))
    last_progress = loop.time()
    while True:
        alive()
        n = applied(await positions(), ends)
        now = loop.time()
        sample = (now, n, _cpu(processes))
        if n > prev[1]:
            last_progress = now
        if first is None and n > start_n:
            first = sample if n < total else prev
        if n >= total:
            assert first is not None
            begin = first
            break
        limit = first_timeout if first is None else STALL_TIMEOUT_S
        if now - last_progress > limit:
            raise TimeoutError(f"no progress for {limit:g} s: {n - start_n} of "
                               f"{total - start_n} events applied")
        prev = sample
        await asyncio.sleep(poll_s)
    seconds = sample[0] - begin[0]
    cpu = {name: max(0.0, 100.0 * (sample[2][name] - begin[2][name]) / seconds)
           if seconds > 0 else 0.0 for name in sample[2]}
    return Timed(n - begin[1], seconds, cpu)


def _cpu(processes: dict[str, Watched]) -> dict[str, float]:
    """CPU seconds of each process, and `other`: the machine's busy time minus theirs (other
    users of this machine, the kernel) so a noisy neighbour shows in the figures."""
    times = {name: cpu_seconds(p) for name, p in processes.items() if p is not None}
    machine = psutil.cpu_times()
    busy = machine.user + machine.system + getattr(machine, "irq", 0.0) + getattr(
        machine, "softirq", 0.0) + getattr(machine, "steal", 0.0) + getattr(machine, "nice", 0.0)
    times["other"] = busy - sum(times.values())
    return times


# -- scenario plumbing --------------------------------------------------------------------------


@dataclasses.dataclass
class Services:
    kafka: str
    redis_url: str
    pids: dict[str, int]
    embedded: bool

    def processes(self) -> dict[str, psutil.Process | None]:
        out: dict[str, psutil.Process | None] = {}
        for label, name in (("redis", "valkey"), ("broker", "tansu")):
            pid = self.pids.get(name)
            out[label] = psutil.Process(pid) if pid else None
        return out


@dataclasses.dataclass
class Row:
    scenario: str
    events: int
    seconds: float
    rate: float
    changes_per_event: float | None
    cpu: dict[str, float]
    target: str = ""
    verdict: str = ""


class Bench:
    """Shared state of one benchmark run: services, data, scratch directory, results."""

    def __init__(self, args: argparse.Namespace, services: Services, redis: Redis,
                 workdir: Path) -> None:
        self.args = args
        self.services = services
        self.redis = redis
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.extra: list[tuple[str, str, str, str]] = []  # figure, value, target, verdict
        self.children: list[Child] = []
        self.masks: dict[int, dict[str, int]] = {}  # segments -> customer -> mask after pass 1

    def prefix(self, scenario: str) -> tuple[TopicNames, str]:
        name = f"bench-{self.run_id}-{scenario}"
        return TopicNames(f"{name}."), name

    async def setup(self, scenario: str, segments: int) -> tuple[TopicNames, str]:
        topics, key_prefix = self.prefix(scenario)
        parts = await ensure_topics(self.services.kafka, topics, self.args.partitions, 1)
        assert parts == self.args.partitions, parts
        store = DefinitionStore(self.redis, key_prefix)
        for seg_id, body in segment_definitions(segments):
            await store.put(seg_id, body)
        return topics, key_prefix

    async def produce(self, topics: TopicNames, data: Pass, label: str) -> dict[str, int]:
        seconds = await produce_records(self.services.kafka, topics, self.args.partitions,
                                        data.records)
        ends = await input_ends(self.services.kafka, topics, self.args.partitions)
        say(f"{label}: produced {len(data.records)} events in {seconds:.1f} s "
            f"({len(data.records) / seconds:,.0f}/s)")
        return ends

    def start_processor(self, topics: TopicNames, key_prefix: str) -> Processors:
        env = dict(os.environ)
        env.update({
            "SEGSTREAM_KAFKA_BOOTSTRAP": self.services.kafka,
            "SEGSTREAM_REDIS_URL": self.services.redis_url,
            "SEGSTREAM_TOPIC_PREFIX": topics.prefix,
            "SEGSTREAM_KEY_PREFIX": key_prefix,
            "SEGSTREAM_GROUP_ID": f"{key_prefix}-processor",
            "SEGSTREAM_PARTITIONS": str(self.args.partitions),
            "SEGSTREAM_RUN_DIR": str(self.workdir / key_prefix),
            "SEGSTREAM_HTTP_PORT": "0",  # each processor serves /metrics on a port of its own
        })
        # `segstream process` refuses to start without them; generated per run, never printed.
        env.setdefault("SEGSTREAM_API_TOKEN", secrets.token_urlsafe(24))
        env.setdefault("SEGSTREAM_SECRET_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
        children = []
        for n in range(self.args.processors):
            log_path = self.workdir / f"{key_prefix}-processor-{n}.log"
            children.append(Child(f"processor {n} of {key_prefix}",
                                  [sys.executable, "-m", "streams.cli", "process"], env, log_path))
        self.children.extend(children)
        return Processors(children)

    async def time_processor(
        self, child: Processors, key_prefix: str, ends: dict[str, int], name: str,
        resumed: bool = False,
    ) -> Timed:
        """Time from the processor's start (its group's join, or `resumed`) to the last commit."""
        progress = RedisOffsets(self.redis, key_prefix, self.args.partitions)
        processes: dict[str, Watched] = {"processor": child.process, **self.services.processes(),
                                         "harness": psutil.Process()}
        profiler = Profiler(self.args.profile, f"{self.run_id}-{name}", child.pids)
        try:
            if resumed:
                return await time_until_applied(progress.positions, ends, processes,
                                                child.check, started=already_started)
            async with GroupStable(self.services.kafka, f"{key_prefix}-processor") as stable:
                return await time_until_applied(progress.positions, ends, processes,
                                                child.check, started=stable)
        finally:
            profiler.stop()

    def stop_all(self) -> None:
        for child in self.children:
            child.stop()
        self.children.clear()

    async def used_memory(self) -> tuple[int, int]:
        """Redis `used_memory` and, within it, client connection buffers (`mem_clients_normal`)."""
        info = await self.redis.info("memory")
        return int(info["used_memory"]), int(info["mem_clients_normal"])

    def memory(self, segments: int, before: tuple[int, int], after: tuple[int, int],
               customers: int, when: str) -> None:
        """Per customer: the used_memory delta less client buffers, which hold the last batch's
        commit payload for a while (transient, per connection, bounded by the batch size, not
        by the number of customers); the buffers are shown beside it."""
        delta = (after[0] - after[1]) - (before[0] - before[1])
        per_customer = delta / customers
        checked = segments == 50 and when == "after pass 1"
        verdict = "PASS" if per_customer <= TARGET_BYTES_PER_CUSTOMER else "MISS"
        self.extra.append((
            f"Redis per customer (used_memory delta less client buffers), {segments} segments, "
            f"{when}",
            f"{per_customer:,.0f} B ({delta:,} B / {customers:,} customers; client buffers "
            f"{after[1]:,} B, used_memory delta {after[0] - before[0]:,} B)",
            f"<= {TARGET_BYTES_PER_CUSTOMER:,} B" if checked else "",
            verdict if checked else "",
        ))

    async def memory_breakdown(self, key_prefix: str, segments: int, customers: int) -> None:
        """Where the memory goes: MEMORY USAGE of the state hashes and the membership masks."""
        parts = self.args.partitions
        state_bytes = blob_bytes = blobs = member_bytes = 0
        for p in range(parts):
            tag = f"{key_prefix}:{{p{p}}}"
            state_bytes += int(await self.redis.memory_usage(f"{tag}:state", samples=0) or 0)
            for blob in (await self.redis.hgetall(f"{tag}:state")).values():
                blob_bytes += len(blob)
                blobs += 1
            for key in (f"{tag}:masks", f"{tag}:counts"):
                member_bytes += int(await self.redis.memory_usage(key, samples=0) or 0)
        ids = [seg_id for seg_id, _ in segment_definitions(segments)]
        counts = await StateStore(self.redis, key_prefix).member_counts(parts, ids)
        members = sum(counts.values())
        self.extra.append((
            f"  of which state hashes / membership masks and counts, {segments} segments",
            f"{state_bytes / customers:,.0f} B / {member_bytes / customers:,.0f} B per customer",
            "", ""))
        self.extra.append((
            "  encoded state (msgpack) average; memberships per customer",
            f"{blob_bytes / max(1, blobs):,.0f} B; {members / customers:.1f}", "", ""))

    def row(self, scenario: str, timed: Timed, changes: int, pass_events: int,
            target: float | None,
            cpu_names: tuple[str, ...] = ("processor", "redis", "broker", "harness", "other"),
            ) -> Row:
        """`changes` membership events were emitted for the `pass_events` events of the pass."""
        per_event = changes / pass_events if pass_events else None
        target_text = verdict = ""
        if target is not None:
            target_text = f">= {target:,.0f}"
            verdict = "PASS" if timed.rate >= target else "MISS"
        r = Row(scenario, timed.events, timed.seconds, timed.rate, per_event,
                {k: timed.cpu.get(k, float("nan")) for k in cpu_names}, target_text, verdict)
        self.rows.append(r)
        say(f"{scenario}: {timed.events} events in {timed.seconds:.2f} s = {timed.rate:,.0f}/s")
        return r


# -- throughput scenarios -----------------------------------------------------------------------


async def scenario_cold(bench: Bench, data: Pass, segments: int) -> None:
    """Cold start: empty state, everything already produced, timed from first applied."""
    topics, key_prefix = await bench.setup(f"cold{segments}", segments)
    ends = await bench.produce(topics, data, f"cold@{segments}")
    memory_before = await bench.used_memory()
    child = bench.start_processor(topics, key_prefix)
    say(f"cold@{segments}: processor pids {child.pids} started; waiting for them to join")
    try:
        timed = await bench.time_processor(child, key_prefix, ends, f"cold{segments}")
        changes = await topic_size(bench.services.kafka, topics.membership, bench.args.partitions)
        memory_after = await bench.used_memory()
    finally:
        child.stop()
    target = TARGET_COLD_EPS if segments == 50 else None
    bench.row(f"ours cold start, {segments} segments", timed, changes, len(data.records),
              target)
    bench.memory(segments, memory_before, memory_after, data.customers, "after pass 1")
    await bench.memory_breakdown(key_prefix, segments, data.customers)


async def scenario_steady(
    bench: Bench, first: Pass, second: Pass, segments: int, cold_memory: bool
) -> None:
    """Pass 1 on empty state (timed as a cold start too), then pass 2 on warm state and cache."""
    topics, key_prefix = await bench.setup(f"steady{segments}", segments)
    ends1 = await bench.produce(topics, first, f"steady@{segments} pass 1")
    memory_before = await bench.used_memory()
    child = bench.start_processor(topics, key_prefix)
    say(f"steady@{segments}: processor pids {child.pids} started; pass 1 (cold)")
    kafka, parts = bench.services.kafka, bench.args.partitions
    try:
        cold = await bench.time_processor(child, key_prefix, ends1, f"cold{segments}")
        changes1 = await topic_size(kafka, topics.membership, parts)
        memory_pass1 = await bench.used_memory()
        target = TARGET_COLD_EPS if segments == 50 else None
        bench.row(f"ours cold start, {segments} segments", cold, changes1, len(first.records),
                  target)
        bench.masks[segments] = await our_masks(bench.redis, key_prefix, parts)
        if cold_memory:
            bench.memory(segments, memory_before, memory_pass1, first.customers, "after pass 1")
        await asyncio.sleep(1.0)  # let it settle into its idle loop (Kafka commit, gc)
        assignments = child.log_count("assigned partitions")
        child.pause()
        paused = time.monotonic()
        say(f"steady@{segments}: processor paused (SIGSTOP); producing pass 2")
        try:
            ends2 = await bench.produce(topics, second, f"steady@{segments} pass 2")
        finally:
            child.resume()
        pause = time.monotonic() - paused
        say(f"steady@{segments}: processor resumed (SIGCONT) after {pause:.1f} s; pass 2 (warm)")
        steady = await bench.time_processor(child, key_prefix, ends2, f"steady{segments}",
                                            resumed=True)
        if child.log_count("assigned partitions") != assignments or pause > MAX_PAUSE_S:
            bench.notes.append(
                f"steady@{segments}: the processor was paused {pause:.1f} s and its partitions "
                "were reassigned meanwhile: its cache was dropped, pass 2 is not warm")
        changes2 = await topic_size(kafka, topics.membership, parts) - changes1
        memory_after = await bench.used_memory()
    finally:
        child.stop()
    target = TARGET_STEADY_EPS if segments == 20 else None
    bench.row(f"ours steady state, {segments} segments", steady, changes2, len(second.records),
              target)
    customers = len({r[1] for r in first.records} | {r[1] for r in second.records})
    bench.memory(segments, memory_before, memory_after, customers, "after 2 passes")


async def scenario_faust(bench: Bench, data: Pass, segments: int) -> Row | None:
    """The plain Faust agent over the same pass 1: GET, apply, evaluate, SET, send."""
    topics, key_prefix = await bench.setup(f"faust{segments}", segments)
    ends = await bench.produce(topics, data, f"faust@{segments}")
    app_id = f"{key_prefix}-faust"
    env = dict(os.environ)
    env.update({
        "BENCH_FAUST_APP": app_id, "BENCH_KAFKA": bench.services.kafka,
        "BENCH_REDIS": bench.services.redis_url, "BENCH_TOPIC_PREFIX": topics.prefix,
        "BENCH_KEY_PREFIX": key_prefix, "BENCH_PARTITIONS": str(bench.args.partitions),
        "BENCH_FAUST_DATADIR": str(bench.workdir / f"{app_id}-data"),
    })
    child = Child(f"faust worker {app_id}", [sys.executable, str(SCRIPT), "--faust-worker"], env,
                  bench.workdir / f"{app_id}.log")
    bench.children.append(child)
    say(f"faust@{segments}: worker pid {child.pid} started; its group join takes ~30 s")
    tps = [TopicPartition(t, p) for t in topics.inputs for p in range(bench.args.partitions)]
    processes: dict[str, Watched] = {"processor": child.process, **bench.services.processes(),
                                     "harness": psutil.Process()}
    profiler = Profiler(bench.args.profile, f"{bench.run_id}-faust{segments}", [child.pid])
    try:
        async with KafkaCommitted(bench.services.kafka, app_id, tps) as committed:
            timed = await time_until_applied(committed.positions, ends, processes, child.check,
                                             poll_s=0.1, first_timeout=FAUST_JOIN_TIMEOUT_S)
        profiler.stop()
        changes = await topic_size(bench.services.kafka, topics.membership, bench.args.partitions)
    finally:
        profiler.stop()
        child.stop()
    row = bench.row(f"Faust agent, {segments} segments (GET+SET per event)", timed, changes,
                    len(data.records), None)
    ours = bench.masks.get(segments)
    if ours is not None:
        theirs = await faust_masks(bench.redis, key_prefix, list(ours))
        same = sum(1 for cid, mask in ours.items() if theirs.get(cid) == mask)
        bench.extra.append((
            f"final membership, ours vs Faust after pass 1 ({segments} segments)",
            f"{same:,} of {len(ours):,} customers identical", "", ""))
    return row


async def run_throughput(bench: Bench, passes: list[Pass]) -> None:
    steady_n, *cold_counts = bench.args.segments  # sorted, distinct
    first, second = passes
    for cold_n in cold_counts:
        await scenario_cold(bench, first, cold_n)
    await scenario_steady(bench, first, second, steady_n, cold_memory=not cold_counts)
    if bench.args.skip_faust:
        bench.notes.append("Faust baseline skipped (--skip-faust)")
        return
    faust_row = await scenario_faust(bench, first, steady_n)
    ours = next(r for r in bench.rows if r.scenario == f"ours cold start, {steady_n} segments")
    steady = next(r for r in bench.rows if r.scenario == f"ours steady state, {steady_n} segments")
    assert faust_row is not None
    ratio_same = ours.rate / faust_row.rate
    ratio_steady = steady.rate / faust_row.rate
    bench.extra.append((f"ours/Faust, same data (cold, {steady_n} segments)",
                        f"{ratio_same:.1f}x", f">= {TARGET_FAUST_RATIO:g}x",
                        "PASS" if ratio_same >= TARGET_FAUST_RATIO else "MISS"))
    bench.extra.append((f"ours steady/Faust ({steady_n} segments)", f"{ratio_steady:.1f}x",
                        "", ""))
    if ours.changes_per_event is not None and faust_row.changes_per_event is not None:
        bench.notes.append(
            f"membership changes per event, same data: ours {ours.changes_per_event:.4f}, "
            f"Faust {faust_row.changes_per_event:.4f} (transient flips depend on how the customers "
            "and orders topics interleave; final memberships are compared above)")


# -- latency ------------------------------------------------------------------------------------


async def run_latency(bench: Bench, warmup: Pass, timed_pass: Pass) -> None:
    """Fixed-rate production against a running processor; event -> membership latency."""
    args = bench.args
    segments = min(args.segments)
    topics, key_prefix = await bench.setup(f"latency{segments}", segments)
    kafka, parts = bench.services.kafka, args.partitions
    ends = await bench.produce(topics, warmup, f"latency@{segments} warm-up")
    child = bench.start_processor(topics, key_prefix)
    say(f"latency@{segments}: processor pids {child.pids}; applying the warm-up pass")
    try:
        progress = RedisOffsets(bench.redis, key_prefix, parts)
        processes = {"processor": child.process, **bench.services.processes(),
                     "harness": psutil.Process()}
        await time_until_applied(progress.positions, ends, processes, child.check)
        await asyncio.sleep(1.0)
        member_tps = [TopicPartition(topics.membership, p) for p in range(parts)]
        start_at = await high_watermarks(kafka, member_tps)
        latencies: list[Latency] = []
        stop_reading = asyncio.Event()
        reader = asyncio.create_task(_read_membership(kafka, start_at, latencies, stop_reading))
        await asyncio.sleep(0.5)
        cpu0 = _cpu(processes)
        t0 = time.perf_counter()
        profiler = Profiler(args.profile, f"{bench.run_id}-latency", child.pids)
        try:
            sent, late, blocked = await _produce_at_rate(kafka, topics, parts,
                                                         timed_pass.events, args.rate,
                                                         args.duration)
        finally:
            profiler.stop()
        elapsed = time.perf_counter() - t0
        cpu = {k: max(0.0, 100.0 * (v - cpu0[k]) / elapsed) for k, v in _cpu(processes).items()}
        final_ends = await input_ends(kafka, topics, parts)
        await time_until_applied(progress.positions, final_ends, processes, child.check)
        await asyncio.sleep(1.0)
        stop_reading.set()
        await reader
    finally:
        child.stop()
    totals = sorted(x.total for x in latencies)
    count = len(totals)
    p50 = statistics.median(totals) if totals else float("nan")
    p99 = _quantile(totals, 0.99)
    verdict = "PASS" if count and p99 <= TARGET_P99_MS else "MISS"
    bench.extra.append((f"produced at {args.rate:,}/s for {args.duration:g} s",
                        f"{sent} events in {elapsed:.1f} s ({sent / elapsed:,.0f}/s); "
                        f"behind schedule at most {late * 1000:.0f} ms, a send() blocked at "
                        f"most {blocked * 1000:.0f} ms", "", ""))
    bench.extra.append(("membership events measured (cause_event_id matched)", f"{count}", "", ""))
    bench.extra.append(("event -> membership latency p50", f"{p50:.1f} ms", "", ""))
    bench.extra.append((f"event -> membership latency p99 @ {args.rate:,}/s", f"{p99:.1f} ms",
                        f"<= {TARGET_P99_MS:g} ms", verdict))
    if totals:
        bench.extra.append(("event -> membership latency max", f"{totals[-1]:.1f} ms", "", ""))
    for part in ("queued", "processing", "delivery"):
        values = [getattr(x, part) for x in latencies]
        bench.extra.append((f"  of which {part} (p50 / p99)",
                            f"{_quantile(values, 0.5):.0f} / {_quantile(values, 0.99):.0f} ms",
                            "", ""))
    by_window = _by_window([(x.sent, x.total) for x in latencies])
    bench.extra.append(("  p50 / p99 by send time", by_window, "", ""))
    bench.extra.append(("CPU% during the fixed-rate phase",
                        ", ".join(f"{k} {v:.0f}%" for k, v in cpu.items()), "", ""))


async def run_latency_floor(bench: Bench, warmup: Pass, timed_pass: Pass, when: str) -> None:
    """The baseline for the latency figure, in the same run: what this broker gives a pipeline
    that does nothing. Same warm-up history, producer, rate and duration as `run_latency`; a
    plain aiokafka forwarder (in this process) copies every input record to an output topic as
    soon as it is fetched, and a reader measures stamp -> received, two broker hops like ours."""
    args = bench.args
    topics, _ = await bench.setup(f"floor-{when}", 0)
    kafka, parts = bench.services.kafka, args.partitions
    await bench.produce(topics, warmup, f"latency floor ({when} ours) warm-up")
    inputs = [TopicPartition(t, p) for t in (topics.customers, topics.orders)
              for p in range(parts)]
    outputs = [TopicPartition(topics.membership, p) for p in range(parts)]
    starts = await high_watermarks(kafka, inputs + outputs)
    stop = asyncio.Event()
    stamped: list[tuple[float, float]] = []
    forwarder = asyncio.create_task(_forward(kafka, inputs, starts, topics.membership, stop))
    reader = asyncio.create_task(_read_stamps(kafka, outputs, starts, stamped, stop))
    await asyncio.sleep(1.5)  # both consumers fetching
    processes: dict[str, Watched] = {"broker": bench.services.processes()["broker"],
                                     "harness": psutil.Process()}
    cpu0 = _cpu(processes)
    t0 = time.perf_counter()
    sent, _, _ = await _produce_at_rate(kafka, topics, parts, timed_pass.events, args.rate,
                                        args.duration)
    elapsed = time.perf_counter() - t0
    cpu = {k: max(0.0, 100.0 * (v - cpu0[k]) / elapsed) for k, v in _cpu(processes).items()}
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(forwarder, reader)
    latencies = sorted(latency for _, latency in stamped)
    bench.extra.append((
        f"baseline {when} ours: plain forwarder, same broker and traffic (stamp -> received) "
        "p50 / p99",
        f"{_quantile(latencies, 0.5):.1f} / {_quantile(latencies, 0.99):.1f} ms "
        f"({len(latencies)} of {sent}; CPU broker {cpu.get('broker', float('nan')):.0f}%, "
        f"harness {cpu['harness']:.0f}%)", "", ""))
    bench.extra.append(("  p50 / p99 by send time", _by_window(stamped), "", ""))


@contextlib.asynccontextmanager
async def _reading(kafka: str, start_at: dict[TopicPartition, int], fetch_wait_ms: int
                   ) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer assigned to `start_at`'s partitions, at those offsets (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_wait_ms)
    await consumer.start()
    try:
        consumer.assign(list(start_at))
        for tp, offset in start_at.items():
            consumer.seek(tp, offset)
        yield consumer
    finally:
        await consumer.stop()


async def _forward(kafka: str, inputs: list[TopicPartition], starts: dict[TopicPartition, int],
                   output: str, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=0)
    await producer.start()
    try:
        async with _reading(kafka, {tp: starts[tp] for tp in inputs}, 20) as consumer:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=50)
                futures = [await producer.send(output, r.value, key=r.key,
                                               partition=tp.partition)
                           for tp, records in batch.items() for r in records]
                if futures:
                    await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_stamps(kafka: str, outputs: list[TopicPartition],
                       starts: dict[TopicPartition, int], latencies: list[tuple[float, float]],
                       stop: asyncio.Event) -> None:
    start_at = {tp: starts[tp] for tp in outputs}
    async with _reading(kafka, start_at, LATENCY_READER_FETCH_WAIT_MS) as consumer:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            received = time.time_ns() / 1e6
            for records in batch.values():
                for record in records:
                    _, _, stamp = orjson.loads(record.value)["event_id"].rpartition("@")
                    if stamp.isdigit():
                        sent = int(stamp) / 1000.0
                        latencies.append((sent, received - sent))


@dataclasses.dataclass(frozen=True)
class Latency:
    """One membership event, ms. `changed_at` is the processor clock when its batch began;
    the record timestamp is when the processor's producer appended it (after the batch was
    applied): total = queued + processing + delivery."""

    total: float
    sent: float  # epoch ms of the stamp, for the figures by time window
    queued: float  # stamp -> changed_at: produce, broker, fetch, waiting behind earlier batches
    processing: float  # changed_at -> record timestamp: applying the rest of the batch
    delivery: float  # record timestamp -> received: produce ack, broker, our reader's fetch


def _by_window(stamped: list[tuple[float, float]], windows: int = 4) -> str:
    """p50/p99 of latencies grouped by when their event was sent, in `windows` equal parts of
    the fixed-rate phase: shows whether the broker's floor grows during the run."""
    if not stamped:
        return "-"
    first = min(sent for sent, _ in stamped)
    span = max(sent for sent, _ in stamped) - first or 1.0
    groups: list[list[float]] = [[] for _ in range(windows)]
    for sent, latency in stamped:
        groups[min(windows - 1, int((sent - first) / span * windows))].append(latency)
    width = span / windows / 1000.0
    return ", ".join(f"{i * width:.0f}-{(i + 1) * width:.0f} s {_quantile(g, 0.5):.0f}/"
                     f"{_quantile(g, 0.99):.0f}" for i, g in enumerate(groups))


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _produce_at_rate(
    kafka: str, topics: TopicNames, partitions: int, events: list[dict[str, Any]], rate: int,
    duration: float,
) -> tuple[int, float, float]:
    """Send `rate` events/s for `duration` s, each stamped (event_id `<id>@<epoch µs>`).

    Returns events sent, the worst lag behind schedule and the longest a `send()` blocked
    (aiokafka blocks when a partition's batch is full and the broker has not taken it yet).
    Acknowledgements are never awaited in the loop: a failed send is counted by a callback.
    """
    total = min(len(events), int(rate * duration))
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all",
                                linger_ms=LATENCY_PRODUCER_LINGER_MS)
    await producer.start()
    failures: list[BaseException] = []

    def check(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            failures.append(future.exception())  # type: ignore[arg-type]

    loop = asyncio.get_running_loop()
    sent, worst_lag, worst_block = 0, 0.0, 0.0
    try:
        start = loop.time()
        while sent < total:
            now = loop.time()
            due = min(total, int((now - start) * rate) + 1)
            if due - sent > 1:
                worst_lag = max(worst_lag, (due - sent) / rate)
            while sent < due:
                event = dict(events[sent])
                event["event_id"] = f"{event['event_id']}@{time.time_ns() // 1000}"
                topic = getattr(topics, TOPIC_OF_TYPE[event["type"]])
                partition = owner_partition(event["customer_id"], partitions)
                before = loop.time()
                future = await producer.send(topic, orjson.dumps(event),
                                             key=event["customer_id"].encode(),
                                             partition=partition)
                worst_block = max(worst_block, loop.time() - before)
                future.add_done_callback(check)
                sent += 1
            await asyncio.sleep(0.002)
        await producer.flush()
    finally:
        await producer.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} of {sent} sends failed, first: {failures[0]!r}")
    return sent, worst_lag, worst_block


async def _read_membership(
    kafka: str, start_at: dict[TopicPartition, int], latencies: list[Latency],
    stop: asyncio.Event,
) -> None:
    async with _reading(kafka, start_at, LATENCY_READER_FETCH_WAIT_MS) as consumer:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            received = time.time_ns() // 1000
            for records in batch.values():
                for record in records:
                    change = orjson.loads(record.value)
                    _, at, stamp = (change.get("cause_event_id") or "").rpartition("@")
                    if not (at and stamp.isdigit()):
                        continue
                    sent = int(stamp) / 1000.0
                    changed = datetime.fromisoformat(change["changed_at"]).timestamp() * 1000.0
                    latencies.append(Latency(received / 1000.0 - sent, sent, changed - sent,
                                             record.timestamp - changed,
                                             received / 1000.0 - record.timestamp))


# -- the Faust baseline worker (runs in a child process) ----------------------------------------


def faust_worker_main() -> None:
    """The straightforward Faust agent a typical user would write (one child process)."""
    import faust

    from segments.evaluator import SegmentIndex
    from segments.events import InvalidEvent, decode_event, event_type
    from segments.features import apply_event, decode_state, encode_state, new_state
    from segments.membership import iso_ms, membership_record

    env = os.environ
    names = TopicNames(env["BENCH_TOPIC_PREFIX"])
    key_prefix = env["BENCH_KEY_PREFIX"]
    app = faust.App(
        env["BENCH_FAUST_APP"], broker=f"kafka://{env['BENCH_KAFKA']}",
        datadir=env["BENCH_FAUST_DATADIR"],  # else Faust leaves "<app>-data/" in the cwd
        web_enabled=False, topic_disable_leader=True, topic_allow_declare=False,
        topic_partitions=int(env["BENCH_PARTITIONS"]), consumer_auto_offset_reset="earliest",
    )
    source = app.topic(names.customers, names.orders, key_serializer="raw",
                       value_serializer="raw")
    sink = app.topic(names.membership, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def segment_events(stream: Any) -> None:
        redis = connect_redis(env["BENCH_REDIS"])
        definitions = await DefinitionStore(redis, key_prefix).load()
        index = SegmentIndex(definitions.live.values())
        by_slot = {d.slot: d for d in definitions.live.values()}
        async for value in stream:
            now_ms = int(time.time() * 1000)
            try:
                event = decode_event(value)
            except InvalidEvent:
                continue
            key = f"{key_prefix}:faust:{event.customer_id}"
            if event_type(event) == "customer.deleted":
                await redis.delete(key)
                continue
            raw = cast(bytes | None, await redis.get(key))
            state = decode_state(raw) if raw is not None else new_state()
            changed = apply_event(state, event, now_ms)
            if changed is None:
                continue
            mask = index.evaluate(state, now_ms, changed)
            diff = mask ^ state.segments_mask
            state.segments_mask = mask
            await redis.set(key, encode_state(state))
            while diff:
                low = diff & -diff
                diff ^= low
                definition = by_slot[low.bit_length() - 1]
                record = membership_record(
                    added=bool(mask & low), segment_id=definition.id,
                    version=definition.version, customer_id=event.customer_id,
                    email=state.email, changed_at=iso_ms(now_ms), reason="event",
                    cause=event.event_id, cause_event_id=event.event_id,
                )
                await sink.send(key=event.customer_id.encode(), value=record)

    faust.Worker(app, loglevel="warning").execute_from_commandline()


# -- output -------------------------------------------------------------------------------------


def print_report(bench: Bench, header: list[str]) -> None:
    print()
    for line in header:
        print(line)
    if bench.rows:
        print()
        cols = ("scenario", "events", "seconds", "events/s", "changes/ev", "CPU proc",
                "CPU redis", "CPU broker", "CPU harness", "CPU other", "target ev/s", "")
        table: list[tuple[str, ...]] = [cols]
        for r in bench.rows:
            table.append((
                r.scenario, f"{r.events:,}", f"{r.seconds:.2f}", f"{r.rate:,.0f}",
                "-" if r.changes_per_event is None else f"{r.changes_per_event:.3f}",
                *(_pct(r.cpu.get(k)) for k in ("processor", "redis", "broker", "harness",
                                                "other")),
                r.target, r.verdict,
            ))
        _print_table(table)
    if bench.extra:
        print()
        _print_table([("figure", "value", "target", ""), *bench.extra])
    for note in bench.notes:
        print(f"note: {note}")
    print()


def _describe_segments(counts: list[int]) -> str:
    from segments.definitions import parse_definition

    parts = []
    for n in counts:
        defs = [parse_definition(b, segment_id=i, version=1, slot=k)
                for k, (i, b) in enumerate(segment_definitions(n))]
        parts.append(f"{n} ({sum(d.time_relative for d in defs)} time-relative, "
                     f"{sum(bool(d.refs) for d in defs)} segment-of-segment, "
                     f"{sum(len(g) for d in defs for g in d.groups)} conditions)")
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.0f}%"


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000,
                        help="input events per pass (customers + orders topics; default 200000)")
    parser.add_argument("--customers", type=int, default=20_000,
                        help="distinct customers (default 20000)")
    parser.add_argument("--segments", default="20,50",
                        help="segment counts: steady state and Faust at the smallest, cold "
                             "start at each of the others (default 20,50)")
    parser.add_argument("--mode", choices=("throughput", "latency", "both"),
                        default="throughput")
    parser.add_argument("--skip-faust", action="store_true", help="no Faust baseline")
    parser.add_argument("--partitions", type=int, default=8, help="partitions per topic (8)")
    parser.add_argument("--processors", default="1",
                        help="copies of `segstream process` in the group (1); CPU is summed. "
                             "Several counts (1,2,3): the throughput mode once per count, then "
                             "the scaling curve")
    parser.add_argument("--rate", type=int, default=5000, help="latency mode: events/s (5000)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="latency mode: seconds of fixed-rate production (20)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="record the processor with py-spy (raw collapsed stacks) in DIR")
    parser.add_argument("--faust-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.segments = sorted({int(s) for s in args.segments.split(",") if s.strip()})
    except ValueError:
        parser.error("--segments takes comma-separated numbers, e.g. 20,50")
    if not args.segments or min(args.segments) < 1:
        parser.error("--segments needs at least one positive count")
    try:
        args.processor_counts = [int(s) for s in str(args.processors).split(",") if s.strip()]
    except ValueError:
        parser.error("--processors takes a number or comma-separated numbers, e.g. 1,2,3")
    if not args.processor_counts or min(args.processor_counts) < 1:
        parser.error("--processors needs positive counts")
    args.processors = args.processor_counts[0]
    return args


@contextlib.asynccontextmanager
async def services_for_run(workdir: Path) -> Any:
    kafka = os.environ.get("SEGSTREAM_KAFKA_BOOTSTRAP") or None
    redis_url = os.environ.get("SEGSTREAM_REDIS_URL") or None
    if kafka and redis_url:
        yield Services(kafka, redis_url, {}, embedded=False)
        return
    embedded = EmbeddedServices(workdir / "services", kafka=kafka is None, redis=redis_url is None)
    async with embedded:
        yield Services(kafka or embedded.kafka_bootstrap, redis_url or embedded.redis_url,
                       embedded.pids, embedded=True)


async def scaling_curve(args: argparse.Namespace) -> int:
    """One throughput run per processor count, then their events/s side by side."""
    curve: list[tuple[int, list[Row]]] = []
    for count in args.processor_counts:
        args.processors = count
        bench = await run_once(args)
        curve.append((count, bench.rows))
    print(f"scaling with processors (same data; {psutil.cpu_count()} CPUs on this machine: "
          "past one processor per core they share the cores, and the curve flattens)")
    scenarios = [r.scenario for r in curve[0][1]]
    table: list[tuple[str, ...]] = [("scenario", *(f"{n} processor(s)" for n, _ in curve))]
    for scenario in scenarios:
        rates = [next((f"{r.rate:,.0f}/s" for r in rows if r.scenario == scenario), "-")
                 for _, rows in curve]
        table.append((scenario, *rates))
    _print_table(table)
    return 0


async def main_async(args: argparse.Namespace) -> int:
    await run_once(args)
    return 0


async def run_once(args: argparse.Namespace) -> Bench:
    workdir = Path(tempfile.mkdtemp(prefix="segbench-"))
    started = time.monotonic()
    latency_events = int(args.rate * args.duration)
    need_dicts = args.mode in ("latency", "both")
    lengths = [args.events, args.events] + ([latency_events] if need_dicts else [])
    say(f"generating passes of {lengths} events over {args.customers} customers")
    passes = generate(lengths, args.customers, keep_dicts=need_dicts)
    # Millions of long-lived objects: a full collection of them would pause this harness (the
    # fixed-rate producer and the membership reader) for a second or more. Freeze them.
    gc.collect()
    gc.freeze()
    async with services_for_run(workdir) as services:
        redis = connect_redis(services.redis_url)
        bench = Bench(args, services, redis, workdir)
        header = [
            f"segstream throughput benchmark: mode {args.mode}, {args.events:,} events/pass, "
            f"{args.customers:,} customers, segments {args.segments}, {args.partitions} "
            f"partitions, {args.processors} processor process(es)",
            f"machine: {psutil.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"services {'embedded Tansu + Valkey' if services.embedded else 'external'} "
            f"(broker {services.kafka}, redis {services.redis_url})",
            f"segments: {_describe_segments(args.segments)}",
            f"pass 1: {passes[0].describe()}",
            f"pass 2: {passes[1].describe()}",
            *([f"pass 3 (fixed rate, latency): {passes[2].describe()}"] if need_dicts else []),
        ]
        try:
            if args.mode in ("throughput", "both"):
                await run_throughput(bench, passes[:2])
            if args.mode in ("latency", "both"):
                await run_latency_floor(bench, passes[0], passes[2], "before")
                await run_latency(bench, passes[0], passes[2])
                await run_latency_floor(bench, passes[0], passes[2], "after")
        except BaseException:
            for child in bench.children:
                say(f"--- last lines of {child.log_path}:\n{child.tail()}")
            raise
        finally:
            bench.stop_all()
            await redis.aclose()
        header.append(f"wall time {time.monotonic() - started:.0f} s; logs in {workdir}")
        print_report(bench, header)
    return bench


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.faust_worker:
        faust_worker_main()
        return 0
    if len(args.processor_counts) > 1:
        if args.mode != "throughput":
            print("--processors with several counts runs the throughput mode only", file=sys.stderr)
            args.mode = "throughput"
        return asyncio.run(scaling_curve(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
