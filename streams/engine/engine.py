"""The partition-owned processing engine: one batch of input records in, state and changes out.

For each owned partition `p` the engine holds a cache of decoded customer states (it is their only
writer, so the cache is coherent). A batch goes through five steps with no await per event:

1. decode every record; bad ones become dead letters, strays (a producer partitioner that placed
   the customer elsewhere) are forwarded to the repartition topic at their owner partition;
2. load, in one HMGET per partition, the states the cache lacks;
3. apply each event, re-evaluate only the segments whose inputs changed, queue membership changes
   (the event loop turns every `APPLY_CHUNK` events, so the producer and the fetcher go on);
4. flush every produced record and wait for the broker's acknowledgement;
5. commit states, membership masks and counts, and the consumed offsets of each partition in
   one atomic script call (all partitions pipelined in one round trip).

A crash anywhere before 5 replays the batch from the offsets stored in Redis: state changes are
applied exactly once, membership changes may be produced twice with the same deterministic ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from segments.deadletters import dlq_headers
from segments.definitions import SegmentDefinition
from segments.evaluator import SegmentIndex
from segments.events import (
    TOPIC_OF_TYPE,
    TYPE_OF_CLASS,
    CustomerDeleted,
    InvalidEvent,
    decode_event,
    event_type,
)
from segments.features import FeatureState, apply_event, decode_state, encode_state, new_state
from segments.membership import SegmentRecords, iso_ms
from streams.aio import let_io_run
from streams.broker.partitioning import owner_partition
from streams.broker.topics import TopicNames
from streams.engine.output import BatchProducer
from streams.engine.output import Pending as OutputRecords
from streams.storage.definitions import DefinitionSet
from streams.storage.state import PartitionWrite, StateStore

log = logging.getLogger("segstream.engine")

_UNKNOWN: Any = object()  # a slot whose records this batch has not looked up yet

APPLY_CHUNK: Final = 1000
"""Events applied between two turns of the event loop while a large batch is prepared.

The producer sends the previous batches' records, and the fetcher takes the next ones, only
when the loop turns; a 20,000-event batch is ~0.6 s of CPU. Three alternating runs each, with
the previous two batches finishing meanwhile: cold@50 27.0/26.4/28.1k -> 28.2/28.8/28.5k
events/s, steady@50 28.4/27.3/30.1k -> 30.7/31.4/32.4k (with produce requests by round)."""


class Record(Protocol):
    """What the engine reads of a consumed Kafka record (aiokafka's ConsumerRecord has it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass
class EngineStats:
    """Counters shown by the demo and exported as metrics."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    forwarded: int = 0
    added: int = 0
    removed: int = 0
    batches: int = 0
    commits: int = 0
    """Redis commits of batches: fewer than `batches` when commit groups formed (a backlog)."""
    backfilled: int = 0
    applied_during_backfill: int = 0


@dataclass
class OwnedPartition:
    """Cache of one owned partition: customer id -> state, or None when known to have none."""

    number: int
    cache: dict[str, FeatureState | None] = field(default_factory=dict)


@dataclass
class Backfill:
    """Progress of one partition's backfill towards the definitions `fingerprint`."""

    fingerprint: str
    cursor: int = 0
    scanned: int = 0


@dataclass(frozen=True)
class Prepared:
    """A batch applied to the cache, with what `Engine.finish` must send and commit.

    `writes` is None when the batch left its commit group open: its changes are committed with
    a later batch's (`Engine.prepare(..., close=False)`).
    """

    writes: dict[int, PartitionWrite] | None
    output: OutputRecords


@dataclass
class _OpenWrite:
    """One partition's uncommitted write in the open commit group, and its dirty customers."""

    write: PartitionWrite
    dirty: set[str] = field(default_factory=set)


@dataclass
class _Pending:
    """One partition's share of a batch between decoding and commit."""

    events: list[Any] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    last: dict[str, int] = field(default_factory=dict)
    """topic -> offset of the last record of this partition in the batch."""

    def offsets(self, partition: int) -> dict[str, int]:
        """The next offsets to read, as stored beside the state ("<topic>:<partition>")."""
        return {f"{topic}:{partition}": offset + 1 for topic, offset in self.last.items()}


class Engine:
    """Applies batches of input records to the owned partitions' state."""

    def __init__(
        self,
        store: StateStore,
        output: BatchProducer,
        topics: TopicNames,
        partitions: int,
        definitions: DefinitionSet,
        cache_size: int = 200_000,
        clock: Any = None,
    ) -> None:
        self.store = store
        self.output = output
        self.topics = topics
        self.partitions = partitions
        self.cache_size = cache_size
        self.owned: dict[int, OwnedPartition] = {}
        self.backfills: dict[int, Backfill] = {}
        self.stats = EngineStats()
        self._topic_of_class = {
            cls: getattr(topics, TOPIC_OF_TYPE[name]) for cls, name in TYPE_OF_CLASS.items()
        }
        self._repartition = topics.repartition
        self._clock = clock
        self._records: dict[str, dict[int, SegmentRecords | None]] = {}
        """reason -> slot -> the records of that segment in this batch"""
        self._changed_at = ""
        self._open: dict[int, _OpenWrite] = {}
        """partition -> its write in the open commit group (batches applied, not committed)"""
        self.apply_chunk = APPLY_CHUNK
        self._awaiting_commit: list[dict[int, PartitionWrite]] = []
        """Writes of prepared batches not committed yet, oldest first (kept from eviction)."""
        self.set_definitions(definitions)

    # -- definitions ------------------------------------------------------------------------

    def set_definitions(self, definitions: DefinitionSet) -> None:
        self.definitions = definitions
        self.index = SegmentIndex(definitions.live.values())
        self._by_slot: dict[int, SegmentDefinition] = {d.slot: d for d in definitions.live.values()}

    # -- ownership --------------------------------------------------------------------------

    def own(self, partition: int) -> OwnedPartition:
        return self.owned.setdefault(partition, OwnedPartition(partition))

    def release(self, partitions: Iterable[int]) -> None:
        """Stop owning `partitions`; an open group's work for them is dropped, uncommitted (the
        next owner replays it from the offsets in Redis)."""
        for p in partitions:
            self.owned.pop(p, None)
            self.backfills.pop(p, None)
            self._open.pop(p, None)

    # -- the batch --------------------------------------------------------------------------

    async def process(self, records: Iterable[Record], now_ms: int) -> None:
        """Apply one batch of records from owned partitions (any topics, any order)."""
        await self.finish(await self.prepare(records, now_ms))

    async def prepare(self, records: Iterable[Record], now_ms: int, close: bool = True) -> Prepared:
        """Steps 1-3 of a batch: the cache moves on, nothing is sent or committed yet.

        The processor may prepare the next batch while `finish` of this one runs, as long as
        it finishes batches in order.

        With `close=False` the batch joins the open commit group: its states are neither
        encoded nor committed until a later batch closes the group (or `close_group`), and
        then each customer is encoded once for the whole group. Its records are still sent
        with it. Under a backlog this makes the commits larger than one fetch's batch.
        """
        applied_before = self.stats.applied
        self.stats.batches += 1
        self._new_batch(now_ms)
        pending = self._decode_all(records)
        try:
            await self._load_missing(pending)
            since_turn = 0
            for p, work in pending.items():
                group = self._open.get(p)
                if group is None:
                    group = self._open[p] = _OpenWrite(PartitionWrite())
                group.write.offsets.update(work.offsets(p))
                events = work.events
                for start in range(0, len(events), self.apply_chunk):
                    chunk = events[start:start + self.apply_chunk]
                    self._apply_all(p, group, chunk, now_ms)
                    since_turn += len(chunk)
                    if since_turn >= self.apply_chunk:
                        since_turn = 0
                        await let_io_run()
        except BaseException:
            self._abandon_group()
            raise
        if self.backfills:
            self.stats.applied_during_backfill += self.stats.applied - applied_before
        writes = self._close() if close else None
        self._evict()
        return Prepared(writes, self.output.detach())

    @property
    def group_open(self) -> bool:
        """Whether batches were applied whose commit waits for the group to close."""
        return bool(self._open)

    def close_group(self) -> Prepared:
        """The open commit group's writes, with no records of its own, for `finish`."""
        return Prepared(self._close(), self.output.detach())

    @property
    def uncommitted(self) -> int:
        """Prepared batches (or closed groups) whose writes are not committed yet."""
        return len(self._awaiting_commit)

    def _abandon_group(self) -> None:
        """After a batch failed (half applied, perhaps): drop the open group, uncommitted, and
        the caches it touched, so that nothing reaches Redis with offsets past events never
        applied. The group's batches are replayed from the offsets in Redis."""
        for p in self._open:
            if p in self.owned:
                self.owned[p].cache.clear()
        self._open = {}

    def _close(self) -> dict[int, PartitionWrite]:
        """Encode the open group's dirty states once each; its writes leave the group."""
        writes: dict[int, PartitionWrite] = {}
        for p, group in self._open.items():
            cache, write = self.owned[p].cache, group.write
            for customer_id in group.dirty:
                state = cache[customer_id]
                if state is not None:
                    write.put_state(customer_id, encode_state(state))
            writes[p] = write
        self._open = {}
        self._awaiting_commit.append(writes)
        return writes

    async def finish(self, prepared: Prepared) -> None:
        """Steps 4-5: send the batch's records, wait for the acks, then commit it in Redis."""
        await self.send(prepared)
        await self.commit(prepared)

    async def send(self, prepared: Prepared) -> None:
        """Step 4: send the batch's records and wait for the broker's acks.

        May run before the previous batch's `commit` (the processor does, to take that commit
        out of the latency); the commits themselves must stay in batch order.
        """
        await self.output.send(prepared.output)

    async def commit(self, prepared: Prepared) -> None:
        """Step 5, after `send` of the same batch: states, masks and offsets, atomically.

        Nothing for a batch that left its group open: the batch that closes it commits all.
        """
        if prepared.writes is not None:
            await self.store.commit_many(prepared.writes)
            self.stats.commits += 1
            self._awaiting_commit = [w for w in self._awaiting_commit if w is not prepared.writes]

    def _new_batch(self, now_ms: int) -> None:
        """Per-batch constants: the batch's `changed_at` and the records prepared with it."""
        self._changed_at = iso_ms(now_ms)
        self._records = {}

    def _decode_all(self, records: Iterable[Record]) -> dict[int, _Pending]:
        """Step 1, per partition: the events to apply and the customers not in the cache.

        The hot loop of a batch: names are bound to locals, and no method is called per record
        in the common case.
        """
        pending: dict[int, _Pending] = {}
        topic_of_class, repartition = self._topic_of_class, self._repartition
        partitions, owned = self.partitions, self.owned
        count = 0
        partition = -1  # records mostly come grouped by partition: look up on a switch
        work = _Pending()
        cache: dict[str, FeatureState | None] = {}
        events, missing = work.events, work.missing
        for record in records:
            count += 1
            if record.partition != partition:
                partition = record.partition
                found = pending.get(partition)
                if found is None:
                    found = pending[partition] = _Pending()
                work = found
                cache, events, missing = owned[partition].cache, work.events, work.missing
            topic = record.topic
            work.last[topic] = record.offset
            try:
                event = decode_event(record.value or b"")
            except InvalidEvent as exc:
                self._dead_letter(record, exc.code, exc.reason)
                continue
            expected = topic_of_class[type(event)]
            if topic != expected and topic != repartition:
                kind = event_type(event)
                reason = f"{kind} events belong on topic {expected!r}, not {topic!r}"
                self._dead_letter(record, "wrong_topic", reason)
                continue
            customer_id = event.customer_id
            owner = owner_partition(customer_id, partitions)
            if owner != partition:
                self._forward(record, owner)
                continue
            events.append(event)
            if customer_id not in cache:
                missing.add(customer_id)
        self.stats.events += count
        return pending

    def _dead_letter(self, record: Record, code: str, reason: str) -> None:
        self.stats.dead_letters += 1
        log.warning(
            "dead letter from %s[%d]@%d: %s", record.topic, record.partition, record.offset, reason
        )
        headers = [*record.headers, *dlq_headers(
            record.topic, record.partition, record.offset, code, reason
        )]
        partitions = self.output.known_partitions(self.topics.dlq)
        self.output.add(
            self.topics.dlq, record.partition % partitions, record.key, record.value or b"", headers
        )

    def _forward(self, record: Record, owner: int) -> None:
        self.stats.forwarded += 1
        origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
        headers = [*record.headers, ("segstream.forwarded-from", origin)]
        self.output.add(self.topics.repartition, owner, record.key, record.value or b"", headers)

    async def _load_missing(self, pending: Mapping[int, _Pending]) -> None:
        for p, work in pending.items():
            if not work.missing:
                continue
            ids = list(work.missing)
            blobs = await self.store.load_states(p, ids)
            cache = self.owned[p].cache
            for customer_id, blob in zip(ids, blobs, strict=True):
                cache[customer_id] = decode_state(blob) if blob is not None else None

    def _apply_all(self, partition: int, group: _OpenWrite, events: list[Any], now_ms: int
                   ) -> None:
        """Step 3 for `events` of one partition (all of its batch's, or a chunk of them) into
        its write in the open group: apply, re-evaluate, queue changes, note dirty states."""
        cache = self.owned[partition].cache
        write, dirty = group.write, group.dirty
        evaluate = self.index.evaluate
        applied = duplicates = 0
        for event in events:
            customer_id = event.customer_id
            state = cache.get(customer_id)
            if type(event) is CustomerDeleted:
                if state is not None:
                    self._emit_diff(customer_id, state, 0, "customer_deleted", write,
                                    event.event_id)
                    cache[customer_id] = None
                    dirty.discard(customer_id)
                    write.delete_state(customer_id)
                applied += 1
                continue
            if state is None:
                state = cache[customer_id] = new_state()
            changed = apply_event(state, event, now_ms)
            if changed is None:
                duplicates += 1
                continue
            applied += 1
            dirty.add(customer_id)
            new_mask = evaluate(state, now_ms, changed)
            if new_mask != state.segments_mask:
                self._emit_diff(customer_id, state, new_mask, "event", write, event.event_id)
        self.stats.applied += applied
        self.stats.duplicates += duplicates

    def _emit_diff(
        self,
        customer_id: str,
        state: FeatureState,
        new_mask: int,
        reason: str,
        write: PartitionWrite,
        cause_event_id: str | None,
    ) -> None:
        """Queue one membership record per flipped bit and set `state.segments_mask`.

        A cold start flips ~3 bits per event: the per-change work is a lookup, the record's
        join, its append to the partition's Kafka batch and a count.
        """
        diff = state.segments_mask ^ new_mask
        state.segments_mask = new_mask
        by_slot = self._records.get(reason)
        if by_slot is None:
            by_slot = self._records[reason] = {}
        topic = self.topics.membership
        output = self.output
        sink = output.pending(topic, output.partition_of(topic, customer_id))
        key = customer_id.encode()
        who = SegmentRecords.who(customer_id, state.email)
        cause_tail = SegmentRecords.cause_tail(cause_event_id)
        prefix = SegmentRecords.cause_prefix(cause_event_id)
        suffixes = SegmentRecords.customer_suffixes(customer_id)
        counts = write.counts
        added = removed = 0
        while diff:
            low = diff & -diff
            diff ^= low
            slot = low.bit_length() - 1
            records = by_slot.get(slot, _UNKNOWN)
            if records is _UNKNOWN:
                records = by_slot[slot] = self._segment_records(slot, reason)
            if records is None:
                continue
            segment_id = records.segment_id
            if new_mask & low:
                sink.add(key, records.record(True, prefix, suffixes, who, cause_tail))
                counts[segment_id] = counts.get(segment_id, 0) + 1
                added += 1
            else:
                sink.add(key, records.record(False, prefix, suffixes, who, cause_tail))
                counts[segment_id] = counts.get(segment_id, 0) - 1
                removed += 1
        self.stats.added += added
        self.stats.removed += removed
        write.masks[customer_id] = new_mask

    def _segment_records(self, slot: int, reason: str) -> SegmentRecords | None:
        """Records of the segment behind a bit (live, or deleted: a tombstone) in this batch."""
        definition = self._by_slot.get(slot)
        if definition is not None:
            return SegmentRecords(definition.id, definition.version, self._changed_at, reason)
        tomb = self.definitions.tombstones.get(slot)
        if tomb is not None:
            return SegmentRecords(tomb[0], tomb[1], self._changed_at, "segment_deleted")
        return None

    def _evict(self) -> None:
        """Trim each partition's cache to its share, oldest first.

        A customer whose write is not committed yet stays (the writes of prepared batches not
        committed yet, and the open commit group's dirty customers): loading it back from Redis
        before the commit would read an older state.
        """
        if not self.owned:
            return
        per_partition = max(1, self.cache_size // len(self.owned))
        if all(len(owned.cache) <= per_partition for owned in self.owned.values()):
            return  # the usual case: no set of the customers to keep is built
        keep: set[str] = set()
        for writes in self._awaiting_commit:
            for write in writes.values():
                keep.update(write.states)
                keep.update(write.deleted)
        for group in self._open.values():
            keep.update(group.dirty)
            keep.update(group.write.deleted)
        for owned in self.owned.values():
            excess = len(owned.cache) - per_partition
            if excess <= 0:
                continue
            for customer_id in list(owned.cache):
                if excess <= 0:
                    break
                if customer_id not in keep:
                    del owned.cache[customer_id]
                    excess -= 1

    # -- backfill on definition changes ---------------------------------------------------------

    async def start_reconcile(self, partition: int) -> bool:
        """Plan a backfill of `partition` if its memberships predate the current definitions.

        The backfill then runs a chunk at a time between live batches (`reconcile_step`), so a
        new segment over millions of customers does not stall live processing. Live events
        during it evaluate against the new definitions already; the backfill only emits what
        is still different when it reaches a customer, so nothing is lost or emitted twice.
        """
        fingerprint = self.definitions.fingerprint()
        meta = await self.store.load_meta(partition)
        if meta.get("definitions") == fingerprint:
            self.backfills.pop(partition, None)
            return False
        if not self._open and not self._awaiting_commit and not await self.store.holds_states(
            partition
        ):
            # Nothing stored to re-evaluate (a first start): mark it done now. Planned, its one
            # empty step would come after the first batch and close that batch's commit group.
            self.backfills.pop(partition, None)
            await self.store.commit(partition, self._mark_backfilled(PartitionWrite(), fingerprint))
            return False
        self.backfills[partition] = Backfill(fingerprint)
        return True

    async def reconcile_step(self, partition: int, now_ms: int, chunk: int = 2000) -> int:
        """Backfill one chunk of `partition`; returns the membership changes it emitted."""
        plan = self.backfills.get(partition)
        if plan is None or partition not in self.owned:
            return 0
        if self._open:  # its commit would later be overwritten by the group's older masks
            raise RuntimeError("close the open commit group before a backfill step")
        if self._awaiting_commit:  # a state it scans from Redis may be older than the cache's
            raise RuntimeError("commit the prepared batches before a backfill step")
        cache = self.owned[partition].cache
        self._new_batch(now_ms)
        plan.cursor, blobs = await self.store.scan_states(partition, plan.cursor, chunk)
        write = PartitionWrite()
        flips = 0
        for customer_id, blob in blobs.items():
            state = cache.get(customer_id) or decode_state(blob)
            if customer_id in cache:
                cache[customer_id] = state
            new_mask = self.index.evaluate_all(state, now_ms)
            if new_mask != state.segments_mask:
                flips += self._backfill_one(customer_id, state, new_mask, write)
        plan.scanned += len(blobs)
        if plan.cursor == 0:
            self._mark_backfilled(write, plan.fingerprint)
            del self.backfills[partition]
        await self.output.flush()
        await self.store.commit(partition, write)
        self.stats.backfilled += flips
        return flips

    def _mark_backfilled(self, write: PartitionWrite, fingerprint: str) -> PartitionWrite:
        """Add what a finished backfill writes to `write`: the definitions it reached; deleted
        segments' counts go."""
        write.meta["definitions"] = fingerprint
        dead = {tomb[0] for tomb in self.definitions.tombstones.values()}
        write.drop_segments = dead - set(self.definitions.live)
        return write

    async def reconcile(self, partition: int, now_ms: int, chunk: int = 2000) -> int:
        """Backfill `partition` completely now (assignment in tests, tools)."""
        flips = 0
        if await self.start_reconcile(partition):
            while partition in self.backfills:
                flips += await self.reconcile_step(partition, now_ms, chunk)
        return flips

    def _backfill_one(
        self, customer_id: str, state: FeatureState, new_mask: int, write: PartitionWrite,
    ) -> int:
        flips = (state.segments_mask ^ new_mask).bit_count()
        self._emit_diff(customer_id, state, new_mask, "backfill", write, None)
        write.put_state(customer_id, encode_state(state))
        return flips

