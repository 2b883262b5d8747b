"""The processor role: a consumer-group member that owns partitions and feeds the engine.

It subscribes to `customers`, `orders` and the internal repartition topic with the range
assignor, so partition p of all three goes to the same member (co-partitioning). Offsets stored in
Redis beside the state are the truth: on assignment each partition seeks to them. Kafka offsets are
committed too, after Redis, so that `segstream lag` and operators' tools see progress.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from redis.asyncio import Redis

from streams.aio import let_io_run
from streams.broker.topics import TopicNames, cluster_id, ensure_topics, high_watermarks
from streams.engine.engine import Engine, Prepared
from streams.engine.output import BatchProducer
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.state import StateStore

log = logging.getLogger("segstream.processor")

GC_FULL_COLLECT_SECONDS = 600.0
GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young collections while the loop runs (CPython's default is 700).

A batch's records, decoded events and new states are young until `gc.freeze()` after the batch;
at 700 each survivor was scanned twice (young, then middle generation) within its batch. Timed
with `gc.callbacks` in a two-pass cold@50 run: 0.45-0.52 s of collections at 700, 0.02-0.05 s
at 100,000, about 3% of the processor's CPU. Cyclic garbage is still collected, every 100,000
allocations (the run above left 50-400 unreachable objects in all)."""
IDLE_POLL_MS = 200
GROUP_POLL_MS = 50
"""How long a fetch waits for records while a commit group is open. Under a backlog the
consumer has the next records buffered before the loop asks; none within 50 ms means the
backlog is done, and the group's commit should not wait the idle poll's 200 ms for it."""
DEFINITIONS_POLL_SECONDS = 0.5
KAFKA_COMMIT_SECONDS = 0.5
COMMIT_GROUP_SECONDS = 1.0
"""A commit group under backlog is closed by the first batch prepared this long after it opened."""


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Processor:
    """Runs the engine for the partitions this process is assigned, until stopped."""

    def __init__(
        self, settings: Settings, redis: Redis, clock: Callable[[], int] = wall_clock_ms
    ) -> None:
        assert settings.kafka_bootstrap is not None
        self.settings = settings
        self.redis = redis
        self.clock = clock
        self.topics = TopicNames(settings.topic_prefix)
        self.store = StateStore(redis, settings.key_prefix)
        self.definition_store = DefinitionStore(redis, settings.key_prefix)
        self.lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self.engine: Engine | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._uncommitted: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._kafka_commit: asyncio.Future[None] | None = None
        self._finishing: asyncio.Future[None] | None = None
        """The latest batch's send and commit; it waits for `_older`'s before committing."""
        self._older: asyncio.Future[None] | None = None
        """The batch before it, still finishing: two batches may be in flight while a third is
        prepared (`_hand_over`)."""
        self._group_positions: dict[TopicPartition, int] = {}
        """Kafka positions of the batches in the engine's open commit group."""
        self._group_events = 0
        self._group_opened = 0.0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume and process until `stop()`; cleans up clients on the way out."""
        bootstrap = self.settings.kafka_bootstrap
        assert bootstrap is not None
        partitions = await ensure_topics(
            bootstrap, self.topics, self.settings.partitions, self.settings.replication_factor
        )
        await self._check_cluster(bootstrap, partitions)
        # linger 0: `BatchProducer` hands over complete batches, and aiokafka lets even those
        # linger (measured: 5.5 ms from send_batch to the wire with linger_ms=5, 0.06 ms with 0)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=0, acks="all",
            enable_idempotence=self.settings.kafka_idempotence,
            max_batch_size=1 << 20,
        )
        await self._producer.start()
        try:
            output = BatchProducer(self._producer)
            for topic in (self.topics.membership, self.topics.dlq, self.topics.repartition):
                await output.partitions_of(topic)
            definitions = await self.definition_store.load()
            self.engine = Engine(
                self.store, output, self.topics, partitions, definitions,
                cache_size=self.settings.state_cache,
            )
            await self._consume(bootstrap)
        finally:
            await self._producer.stop()
            if self.engine is not None:
                stats = self.engine.stats
                log.info("stopped: %d events in %d batches (%.0f per batch) and %d commits, "
                         "%d applied, %d repeated, %d dead letters, %d forwarded, %d added, "
                         "%d removed",
                         stats.events, stats.batches, stats.events / max(1, stats.batches),
                         stats.commits, stats.applied, stats.duplicates, stats.dead_letters,
                         stats.forwarded, stats.added, stats.removed)

    async def _consume(self, bootstrap: str) -> None:
        self._consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=self.settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=4 << 20,
            fetch_max_bytes=64 << 20,
            fetch_max_wait_ms=20,  # Tansu holds an empty fetch for the full wait (500 ms default)
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.settings.session_timeout_ms // 4),
        )
        consumer.subscribe(
            [self.topics.customers, self.topics.orders, self.topics.repartition],
            listener=_Rebalance(self),
        )
        await consumer.start()
        try:
            await self._loop(consumer)
        finally:
            async with self.lock:
                await self._commit_kafka(force=True)
            await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        last_gc = last_defs = time.monotonic()
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        _young_gc.enter()
        try:
            while not self._stopping.is_set():
                busy = self.engine is not None and bool(self.engine.backfills)
                grouping = self.engine is not None and self.engine.group_open
                fetch = asyncio.ensure_future(consumer.getmany(
                    timeout_ms=0 if busy else GROUP_POLL_MS if grouping else IDLE_POLL_MS,
                    max_records=self.settings.batch_max,
                ))
                # while batch N is sent and committed (`_finishing`), batch N+1 is fetched; a
                # finish that ends first is drained at once, so its error surfaces here
                finishing = {self._finishing} if self._finishing is not None else set()
                await asyncio.wait({fetch, stop_wait, *finishing},
                                   return_when=asyncio.FIRST_COMPLETED)
                if self._finishing is not None and self._finishing.done():
                    await self._settle()
                    await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                async with self.lock:
                    if batch:
                        await let_io_run()  # the fetcher asks for the next records first
                        await self._process(batch)
                    else:  # caught up: what the backlog left open is committed now
                        await self._close_open_group()
                    now = time.monotonic()
                    if now - last_defs >= DEFINITIONS_POLL_SECONDS:
                        last_defs = now
                        await self.refresh_definitions()
                    if self.engine is not None and self.engine.backfills:
                        await self.drain()
                        await self._backfill_steps()
                    await self._commit_kafka()
                if self._finishing is None:
                    self.ready.set()
                gc.freeze()
                if time.monotonic() - last_gc > GC_FULL_COLLECT_SECONDS:
                    last_gc = time.monotonic()
                    gc.unfreeze()
                    gc.collect()
        finally:
            _young_gc.exit()
            stop_wait.cancel()
            await self.drain()

    async def _process(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Prepare the batch and start sending its records at once; its commit goes to
        `_finishing`, after the previous batch's (commits stay in batch order).

        The records do not wait for the previous batches' commits: a crash can re-emit up to
        three batches' changes instead of one, with the same ids, and loses nothing, since a
        batch is committed only after its own records were acknowledged.

        Under a backlog (a batch of `commit_group_from` records or more) the batch may leave
        its commit to a later one: the engine's open commit group grows until it holds
        `commit_group_max` events or is `COMMIT_GROUP_SECONDS` old, or a smaller batch or an
        empty fetch closes it. Each customer is then encoded and written once per group, not
        once per fetch (Tansu returns about one produced batch per partition per fetch).
        """
        assert self.engine is not None
        owned = self.engine.owned
        records = [r for tp, rs in batch.items() if tp.partition in owned for r in rs]
        now = time.monotonic()
        if self._group_events == 0:
            self._group_opened = now
        self._group_events += len(records)
        close = (len(records) < self.settings.commit_group_from
                 or self._group_events >= self.settings.commit_group_max
                 or now - self._group_opened >= COMMIT_GROUP_SECONDS)
        try:
            prepared = await self.engine.prepare(records, self.clock(), close=close)
        except BaseException:  # the engine dropped its open group: nothing of it is committed
            self._take_group_positions()
            raise
        self._group_positions.update({tp: rs[-1].offset + 1 for tp, rs in batch.items()
                                      if rs and tp.partition in owned})
        await self._hand_over(prepared, self._take_group_positions() if close else {})

    def _take_group_positions(self) -> dict[TopicPartition, int]:
        """The Kafka positions the closing commit group covers; the next batch opens a new one."""
        positions, self._group_positions, self._group_events = self._group_positions, {}, 0
        return positions

    async def _close_open_group(self) -> None:
        """Hand over the engine's open commit group, if any, as a batch with no records."""
        if self.engine is not None and self.engine.group_open:
            await self._hand_over(self.engine.close_group(), self._take_group_positions())

    async def _hand_over(self, prepared: Prepared, positions: dict[TopicPartition, int]) -> None:
        """Start sending a prepared batch's records; its commit follows the previous batch's.

        Before the next batch is prepared, the batch two back must be done: its send and commit
        then overlap a whole batch's CPU work. Waiting for the previous one instead left the
        processor idle 10-16% of a backlog: a batch's ~16 Kafka batches of records take two
        produce round trips, and the producer runs them only when the CPU-bound preparation of
        the next batch lets the event loop turn, so they end just after it.
        """
        assert self.engine is not None
        sending = asyncio.ensure_future(self.engine.send(prepared))
        try:
            await let_io_run()  # the produce request leaves before the next batch's CPU work
            older, self._older = self._older, None
            if older is not None:
                await older
        except BaseException:
            sending.cancel()
            raise
        self._older = previous = self._finishing
        self._finishing = asyncio.ensure_future(
            self._finish(prepared, positions, sending, previous))

    async def _finish(self, prepared: Prepared, positions: dict[TopicPartition, int],
                      sending: asyncio.Future[None], previous: asyncio.Future[None] | None,
                      ) -> None:
        assert self.engine is not None
        try:
            await sending
        finally:  # even when the send failed: the chain is awaited whole, no error unseen
            if previous is not None:
                await previous  # commits stay in batch order; its error is this batch's too
        await self.engine.commit(prepared)  # nothing if the batch left its group open
        self._uncommitted.update(positions)
        self.ready.set()

    async def _settle(self) -> None:
        """Wait until every batch being sent and committed is done (the latest waits for the
        one before it)."""
        finishing, self._finishing, self._older = self._finishing, None, None
        if finishing is not None:
            await finishing

    async def drain(self) -> None:
        """Commit everything prepared: the batch being sent and committed, then the open commit
        group (before anything else touches Redis state or the partitions: definitions,
        backfill, rebalance, shutdown)."""
        await self._close_open_group()
        await self._settle()

    async def _commit_kafka(self, force: bool = False) -> None:
        """Tell the group how far we are (for lag); Redis offsets remain the truth.

        The periodic commit runs beside the loop, one at a time: an OffsetCommit answered in
        20-35 ms by the busy embedded broker held every event behind it. `force` (revocation,
        shutdown) waits for the one in flight, then commits and waits for that too.
        """
        in_flight = self._kafka_commit
        if in_flight is not None:
            if not in_flight.done() and not force:
                return
            self._kafka_commit = None
            await in_flight  # done, or waited for: surfaces anything but a skipped commit
        if self._consumer is None or not self._uncommitted:
            return
        if not force and time.monotonic() - self._last_commit < KAFKA_COMMIT_SECONDS:
            return
        offsets = {tp: OffsetAndMetadata(o, "") for tp, o in self._uncommitted.items()}
        self._uncommitted = {}
        self._last_commit = time.monotonic()
        commit = asyncio.ensure_future(_commit_offsets(self._consumer, offsets))
        if force:
            await commit
        else:
            self._kafka_commit = commit

    async def refresh_definitions(self) -> None:
        """Reload definitions when their revision moved, and backfill owned partitions."""
        assert self.engine is not None
        if await self.definition_store.revision() == self.engine.definitions.revision:
            return
        await self.drain()
        self.engine.set_definitions(await self.definition_store.load())
        log.info("segment definitions now at revision %d", self.engine.definitions.revision)
        for p in sorted(self.engine.owned):
            await self._start_backfill(p)

    async def _start_backfill(self, partition: int) -> None:
        assert self.engine is not None
        if await self.engine.start_reconcile(partition):
            log.info("partition %d: backfilling for definitions %s", partition,
                     self.engine.definitions.fingerprint() or "(none)")

    async def _backfill_steps(self) -> None:
        """One chunk of each pending backfill, between live batches."""
        assert self.engine is not None
        for p in sorted(self.engine.backfills):
            plan = self.engine.backfills[p]
            flips = await self.engine.reconcile_step(p, self.clock(), self.settings.backfill_chunk)
            if p not in self.engine.backfills:
                log.info("partition %d: backfill done, %d customers scanned, %d changes in "
                         "the last chunk", p, plan.scanned, flips)

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        assert self.engine is not None
        await self.drain()
        assert self.settings.kafka_bootstrap is not None
        by_partition: dict[int, list[TopicPartition]] = {}
        for tp in assigned:
            by_partition.setdefault(tp.partition, []).append(tp)
        stored_offsets = {p: await self.store.load_offsets(p) for p in sorted(by_partition)}
        # The broker is asked for its ends (a throwaway consumer's fetch, ~0.1 s) only where an
        # offset is stored to compare: not on a first start.
        ends = await high_watermarks(self.settings.kafka_bootstrap, [
            tp for tp in assigned if stored_offsets[tp.partition].get(_field(tp), 0) > 0
        ])
        for p, tps in sorted(by_partition.items()):
            stored = stored_offsets[p]
            if any(stored.get(_field(tp), 0) > ends.get(tp, 0) for tp in tps):
                log.error(
                    "partition %d: Redis holds offsets beyond the broker's end (%s > %s): the "
                    "broker lost its data (an embedded broker restarted?). Starting partition %d "
                    "from empty state.", p, stored, {str(tp): ends.get(tp) for tp in tps}, p,
                )
                await self._wipe(p)
                stored = {}
            for tp in tps:
                # offset 0 where nothing is stored: out of range after retention, it resets to
                # the earliest (auto_offset_reset); seek_to_beginning would wait per partition
                consumer.seek(tp, stored.get(_field(tp), 0))
            self.engine.own(p)
            await self._start_backfill(p)
        log.info("assigned partitions %s", sorted(by_partition))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.engine is None:
            return
        await self.drain()
        await self._commit_kafka(force=True)
        self.engine.release({tp.partition for tp in revoked})
        self._uncommitted = {tp: o for tp, o in self._uncommitted.items() if tp not in revoked}
        if revoked:
            log.info("revoked partitions %s", sorted({tp.partition for tp in revoked}))

    async def _check_cluster(self, bootstrap: str, partitions: int) -> None:
        """Detect a broker that is not the one our Redis state came from, and start afresh."""
        current = await cluster_id(bootstrap)
        meta = await self.store.global_meta()
        known = meta.get("kafka_cluster_id")
        if current and known and known != current:
            log.error(
                "Redis state was built from Kafka cluster %s but the broker is cluster %s (an "
                "embedded broker restarted, or SEGSTREAM_KAFKA_BOOTSTRAP changed). Its offsets "
                "mean nothing here: starting from empty state (definitions are kept).",
                known, current,
            )
            for p in range(partitions):
                await self._wipe(p)
        if current and known != current:
            await self.store.set_global_meta({"kafka_cluster_id": current})

    async def _wipe(self, partition: int) -> None:
        await self.store.wipe_partition(partition)
        if self.engine is not None and partition in self.engine.owned:
            self.engine.owned[partition].cache.clear()


def _field(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


async def _commit_offsets(consumer: AIOKafkaConsumer,
                          offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, KafkaError) as exc:
        log.info("kafka offset commit skipped (%s); Redis holds the applied offsets", exc)


class _YoungThreshold:
    """`GC_YOUNG_THRESHOLD` while any processor loop of this process runs; CPython's own
    thresholds again once the last one stops (tests and `segstream up` run several roles, and
    sometimes several processors, in one process)."""

    def __init__(self) -> None:
        self._loops = 0
        self._saved = gc.get_threshold()

    def enter(self) -> None:
        if self._loops == 0:
            self._saved = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *self._saved[1:])
        self._loops += 1

    def exit(self) -> None:
        self._loops -= 1
        if self._loops == 0:
            gc.set_threshold(*self._saved)


_young_gc = _YoungThreshold()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands partitions between group members only between batches (under the lock)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.processor.lock:
            await self.processor.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.processor._consumer
        assert consumer is not None
        async with self.processor.lock:
            await self.processor.on_assigned(consumer, set(assigned))
