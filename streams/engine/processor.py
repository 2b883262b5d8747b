"""The processor role: a consumer-group member that owns partitions and feeds the engine.

It subscribes to `customers`, `orders` and the internal repartition topic with the range
assignor, so partition p of all three goes to the same member (co-partitioning). One turn of
its loop is: poll; the `EventTimeAligner` releases each partition's records in timestamp order
across the three topics; `Engine.prepare` applies them into the `Checkpoint`'s open group;
`Checkpoint.hand_over` sends the batch's records and, when the group closes, queues its commit.
Offsets stored in Redis beside the state are the truth: on assignment each partition seeks to
them. Kafka offsets are committed too, after Redis, so that `segstream lag` and operators' tools
see progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from redis.asyncio import Redis

from streams.aio import let_io_run
from streams.broker.connection import KafkaConnection
from streams.broker.topics import TopicNames, cluster_id, ensure_topics, high_watermarks
from streams.clock import wall_clock_ms
from streams.engine.alignment import EventTimeAligner
from streams.engine.checkpoint import Checkpoint, GroupPolicy
from streams.engine.collector import collector
from streams.engine.engine import Engine
from streams.engine.output import BatchProducer
from streams.engine.stats import EngineObserver, EngineStats, NoObserver
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.state import StateStore

log = logging.getLogger("segstream.processor")

IDLE_POLL_MS: Final = 200
GROUP_POLL_MS: Final = 50
"""How long a fetch waits for records while a commit group is open. Under a backlog the
consumer has the next records buffered before the loop asks; none within 50 ms means the
backlog is done, and the group's commit should not wait the idle poll's 200 ms for it."""
DEFINITIONS_POLL_SECONDS: Final = 0.5
KAFKA_COMMIT_SECONDS: Final = 0.5
TIMER_POLL_MS: Final = 100
"""Due timers are looked for this often: with the idle poll's wait, a timer fires within a few
hundred ms of its instant (docs/design.md, "Timers")."""


class Processor:
    """Runs the engine for the partitions this process is assigned, until stopped."""

    def __init__(
        self, settings: Settings, redis: Redis, clock: Callable[[], int] = wall_clock_ms,
        observer: EngineObserver | None = None,
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
        self.stats = EngineStats()
        """What every run of this processor did (the metrics read it)."""
        self.observer: EngineObserver = observer if observer is not None else NoObserver()
        self._stopping = asyncio.Event()
        self.engine: Engine | None = None
        self.checkpoint: Checkpoint | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._last_kafka_commit = 0.0
        self._kafka_commit: asyncio.Future[None] | None = None
        self._to_report: dict[TopicPartition, int] = {}
        self._timers_polled = 0
        self._abandoned = False
        """Cancelled mid-run: its cleanup leaves Redis alone (`_cancelling`)."""
        self.aligner: EventTimeAligner | None = None
        self._paused: set[TopicPartition] = set()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume and process until `stop()`; cleans up clients on the way out.

        May be called again after it failed (the role's supervisor does, after an outage):
        each run starts from what Redis holds, as a new member of the group.
        """
        kafka = self.settings.kafka_connection()
        self._reset()
        partitions = await ensure_topics(
            kafka, self.topics, self.settings.partitions, self.settings.replication_factor
        )
        await self._check_cluster(kafka, partitions)
        # linger 0: `BatchProducer` hands over complete batches, and aiokafka lets even those
        # linger (docs/design.md, "Output batches")
        producer = AIOKafkaProducer(
            **kafka.client_options(), linger_ms=0, acks="all",
            enable_idempotence=self.settings.kafka_idempotence, max_batch_size=1 << 20,
        )
        await producer.start()
        try:
            output = BatchProducer(producer)
            for topic in (self.topics.membership, self.topics.dlq, self.topics.repartition):
                await output.partitions_of(topic)
            self.engine = Engine(
                self.store, output, self.topics, partitions, await self.definition_store.load(),
                cache_size=self.settings.state_cache, stats=self.stats, observer=self.observer,
            )
            self.checkpoint = Checkpoint(self.store, output, GroupPolicy(
                self.settings.commit_group_from, self.settings.commit_group_max),
                schedule=self.engine.schedule, stats=self.stats)
            await self._consume(kafka)
        finally:
            await producer.stop()
            if self.engine is not None and self.checkpoint is not None:
                _log_totals(self.engine, self.checkpoint)

    def _reset(self) -> None:
        """Forget everything of a previous run: its uncommitted work is replayed from Redis."""
        self.engine = self.checkpoint = self.aligner = self._consumer = None
        self._kafka_commit = None
        self._to_report = {}
        self._paused = set()
        self._timers_polled = 0
        self._abandoned = False
        self.ready.clear()

    async def _consume(self, kafka: KafkaConnection) -> None:
        self._consumer = consumer = AIOKafkaConsumer(
            **kafka.client_options(),
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
        inputs = [self.topics.customers, self.topics.orders, self.topics.repartition]
        self.aligner = EventTimeAligner(inputs, self.settings.task_idle_ms, consumer.highwater)
        consumer.subscribe(inputs, listener=_Rebalance(self))
        await consumer.start()
        try:
            await self._loop(consumer)
        finally:
            if not self._abandoned:
                async with self.lock:
                    await self._commit_kafka(force=True)
            await consumer.stop()

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        engine, checkpoint = self.engine, self.checkpoint
        assert engine is not None and checkpoint is not None
        last_defs = time.monotonic()
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        collector.enter()
        try:
            while not self._stopping.is_set():
                assert self.aligner is not None
                poll_ms = (0 if engine.backfill.plans or engine.timers.backlog
                           else GROUP_POLL_MS if checkpoint.is_open or self.aligner.buffered
                           else min(IDLE_POLL_MS, TIMER_POLL_MS))
                fetch = asyncio.ensure_future(
                    consumer.getmany(timeout_ms=poll_ms, max_records=self.settings.batch_max))
                # while a group flushes and commits, the next batch is fetched; a commit that
                # ends first is settled at once, so its error surfaces here
                finishing = checkpoint.finishing
                await asyncio.wait({fetch, stop_wait, *([finishing] if finishing else [])},
                                   return_when=asyncio.FIRST_COMPLETED)
                if finishing is not None and finishing.done():
                    await checkpoint.settle()
                    await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    break
                batch = fetch.result()
                async with self.lock:
                    await self._turn(batch)
                    if time.monotonic() - last_defs >= DEFINITIONS_POLL_SECONDS:
                        last_defs = time.monotonic()
                        await self.refresh_definitions()
                    await self._commit_kafka()
                if checkpoint.commits or checkpoint.idle:
                    self.ready.set()
                collector.after_batch()
        finally:
            collector.exit()
            stop_wait.cancel()
            if _cancelling():
                # a stop that could not wait (Redis away): nothing more goes to Redis, as after
                # a crash; the next start replays what was not committed
                self._abandoned = True
            else:
                await checkpoint.drain()

    async def _turn(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        """One batch (or none), one chunk of each pending backfill and the due timers, handed
        over.

        Under a backlog (batches of `commit_group_from` records or more) consecutive batches
        share one commit group; a smaller batch, an empty poll, a backfill step or fired timers
        close it.
        """
        engine, checkpoint, aligner = self.engine, self.checkpoint, self.aligner
        assert engine is not None and checkpoint is not None and aligner is not None
        owned = engine.owned
        aligner.add(batch)
        self._pause_full_buffers(aligner)
        records, positions = aligner.release(self.clock(), self.settings.batch_max)
        close = not records
        sent = None
        if records:
            await let_io_run()  # the fetcher asks for the next records first
            now = self.clock()
            close = checkpoint.begin(len(records), now)
            started, changes = time.perf_counter(), self.stats.added + self.stats.removed
            await engine.prepare(records, now, checkpoint)
            self.observer.batch_applied(len(records), time.perf_counter() - started)
            checkpoint.advance(positions)
            if self.stats.added + self.stats.removed != changes:
                sent = self._acknowledged(engine.intake.oldest_ms)
        for p in sorted(engine.backfill.plans):
            plan = engine.backfill.plans[p]
            flips = await engine.backfill.step(p, self.clock(), self.settings.backfill_chunk,
                                               checkpoint)
            close = True
            if p not in engine.backfill.plans:
                log.info("partition %d: backfill done, %d customers scanned, %d changes in "
                         "the last chunk", p, plan.scanned, flips, extra={"partition": p})
        now = self.clock()
        if now - self._timers_polled >= TIMER_POLL_MS or engine.timers.backlog:
            self._timers_polled = now
            if await engine.timers.fire_due(owned, now, checkpoint):
                close = True
        if records or checkpoint.is_open:
            await checkpoint.hand_over(close, sent)

    def _acknowledged(self, oldest_ms: int | None) -> Callable[[], None] | None:
        """What tells the observer, once a batch's membership records are acknowledged, how
        long after its oldest record's timestamp that was."""
        if oldest_ms is None:
            return None
        observer = self.observer

        def sent() -> None:
            observer.changes_acknowledged(max(0.0, (wall_clock_ms() - oldest_ms) / 1000))

        return sent

    def _pause_full_buffers(self, aligner: EventTimeAligner) -> None:
        """Stop fetching topic-partitions whose buffer waits full for another input."""
        consumer = self._consumer
        if consumer is None:
            return
        full = aligner.full() & consumer.assignment()
        if full - self._paused:
            consumer.pause(*(full - self._paused))
        if self._paused - full:
            consumer.resume(*((self._paused - full) & consumer.assignment()))
        self._paused = full

    async def _commit_kafka(self, force: bool = False) -> None:
        """Tell the group how far we are (for lag); Redis offsets remain the truth.

        The periodic commit runs beside the loop, one at a time: a slow OffsetCommit answer
        must not hold the events behind it. `force` (revocation, shutdown) waits for the one in
        flight, then commits and waits for that too.
        """
        in_flight = self._kafka_commit
        if in_flight is not None:
            if not in_flight.done() and not force:
                return
            self._kafka_commit = None
            await in_flight  # done, or waited for: surfaces anything but a skipped commit
        if self.checkpoint is not None:
            self._to_report.update({TopicPartition(*tp): o for tp, o
                                    in self.checkpoint.take_committed().items()})
        if self._consumer is None or not self._to_report:
            return
        if not force and time.monotonic() - self._last_kafka_commit < KAFKA_COMMIT_SECONDS:
            return
        offsets = {tp: OffsetAndMetadata(o, "") for tp, o in self._to_report.items()}
        self._to_report = {}
        self._last_kafka_commit = time.monotonic()
        commit = asyncio.ensure_future(_commit_offsets(self._consumer, offsets, self.stats))
        if force:
            await commit
        else:
            self._kafka_commit = commit

    async def refresh_definitions(self) -> None:
        """Reload definitions when their revision moved, and backfill owned partitions."""
        assert self.engine is not None and self.checkpoint is not None
        if await self.definition_store.revision() == self.engine.definitions.revision:
            return
        await self.checkpoint.drain()
        self.engine.set_definitions(await self.definition_store.load())
        log.info("segment definitions now at revision %d", self.engine.definitions.revision)
        for p in sorted(self.engine.owned):
            await self._plan_backfill(p)

    async def _plan_backfill(self, partition: int) -> None:
        assert self.engine is not None and self.checkpoint is not None
        if await self.engine.backfill.plan(partition, self.checkpoint):
            log.info("partition %d: backfilling for definitions %s", partition,
                     self.engine.definitions.fingerprint() or "(none)",
                     extra={"partition": partition})

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        assert self.engine is not None and self.checkpoint is not None
        await self.checkpoint.drain()
        by_partition: dict[int, list[TopicPartition]] = {}
        for tp in assigned:
            by_partition.setdefault(tp.partition, []).append(tp)
        for p in sorted(by_partition):  # first: a previous owner's late commits are fenced
            await self.checkpoint.claim(p)
        stored_offsets = {p: await self.store.load_offsets(p) for p in sorted(by_partition)}
        # The broker is asked for its ends (a throwaway consumer's fetch) only where an offset
        # is stored to compare: not on a first start.
        ends = await high_watermarks(self.settings.kafka_connection(), [
            tp for tp in assigned if stored_offsets[tp.partition].get(_field(tp), 0) > 0
        ])
        seeked: dict[TopicPartition, int] = {}
        for p, tps in sorted(by_partition.items()):
            stored = stored_offsets[p]
            if any(stored.get(_field(tp), 0) > ends.get(tp, 0) for tp in tps):
                log.error(
                    "partition %d: Redis holds offsets beyond the broker's end (%s > %s): the "
                    "broker lost its data (an embedded broker restarted?). Starting partition %d "
                    "from empty state.", p, stored, {str(tp): ends.get(tp) for tp in tps}, p,
                    extra={"partition": p},
                )
                await self._wipe(p)
                await self.checkpoint.claim(p)  # the wipe took the claim with the rest
                stored = {}
            for tp in tps:
                # offset 0 where nothing is stored: out of range after retention, it resets to
                # the earliest (auto_offset_reset); seek_to_beginning would wait per partition
                seeked[tp] = stored.get(_field(tp), 0)
                consumer.seek(tp, seeked[tp])
            self.engine.own(p)
            await self._plan_backfill(p)
        if self.aligner is not None:
            self.aligner.assign(seeked)
        log.info("assigned partitions %s", sorted(by_partition))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        if self.engine is None or self.checkpoint is None or self._abandoned:
            return
        await self.checkpoint.drain()
        await self._commit_kafka(force=True)
        partitions = {tp.partition for tp in revoked}
        self.engine.release(partitions)
        self.checkpoint.release(partitions)
        if self.aligner is not None:
            self.aligner.revoke(partitions)
        self._paused -= set(revoked)
        self._to_report = {tp: o for tp, o in self._to_report.items() if tp not in revoked}
        if revoked:
            log.info("revoked partitions %s", sorted(partitions))

    async def _check_cluster(self, kafka: KafkaConnection, partitions: int) -> None:
        """Detect a broker that is not the one our Redis state came from, and start afresh;
        refuse input topics whose partition count is not the one the state was built for."""
        current = await cluster_id(kafka)
        meta = await self.store.global_meta()
        known = meta.get("kafka_cluster_id")
        if current and known and known != current:
            log.error(
                "Redis state was built from Kafka cluster %s but the broker is cluster %s (an "
                "embedded broker restarted, or SEGSTREAM_KAFKA_BOOTSTRAP changed). Its offsets "
                "mean nothing here: starting from empty state (definitions are kept).",
                known, current,
            )
            for p in range(max(partitions, int(meta.get("partitions", 0)))):
                await self._wipe(p)
            meta = {}
        if current and known != current:
            await self.store.set_global_meta({"kafka_cluster_id": current})
        built_for = meta.get("partitions")
        if built_for is not None and int(built_for) != partitions:
            raise PartitionCountChanged(int(built_for), partitions)
        if built_for is None:
            await self.store.set_global_meta({"partitions": str(partitions)})

    async def _wipe(self, partition: int) -> None:
        await self.store.wipe_partition(partition)
        if self.engine is not None:
            self.engine.cache.forget([partition])


class PartitionCountChanged(ValueError):
    """The input topics' partition count is not the one the Redis state was built for.

    A customer's state lives under partition `murmur2(customer_id) mod count`: with another
    count most customers' events would reach a partition without their state, start afresh and
    leave their old state and memberships behind. A restart cannot fix that, so the processor
    refuses to start."""

    def __init__(self, built_for: int, now: int) -> None:
        super().__init__(
            f"the Redis state was built for {built_for} partitions of the input topics, which "
            f"now have {now}: each customer's state is kept under the partition its id hashes "
            f"to among {built_for}, so the processor refuses to start rather than misplace "
            "every customer. Change a partition count by a re-key into new topics and a new "
            "SEGSTREAM_KEY_PREFIX (README, \"Changing the partition count\"), or give the "
            f"topics back their {built_for} partitions.")


def _field(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


def _log_totals(engine: Engine, checkpoint: Checkpoint) -> None:
    stats = engine.stats
    log.info("stopped: %d events in %d batches (%.0f per batch) and %d commits, %d applied, "
             "%d repeated, %d dead letters, %d forwarded, %d added, %d removed",
             stats.events, stats.batches, stats.events / max(1, stats.batches),
             checkpoint.commits, stats.applied, stats.duplicates, stats.dead_letters,
             stats.forwarded, stats.added, stats.removed)


async def _commit_offsets(consumer: AIOKafkaConsumer,
                          offsets: dict[TopicPartition, OffsetAndMetadata],
                          stats: EngineStats) -> None:
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, KafkaError) as exc:
        stats.kafka_errors += 1
        log.info("kafka offset commit skipped (%s); Redis holds the applied offsets", exc)


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


def _cancelling() -> bool:
    """Whether the running task is being cancelled (its cleanup must not wait on services)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
