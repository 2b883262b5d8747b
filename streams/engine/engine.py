"""The partition-owned processing engine: one batch of input records applied to state.

`Engine.prepare` takes a batch through three steps with no await per event:

1. `Intake.split`: decode every record; bad ones become dead letters, strays are forwarded;
2. `StateCache.load`: one HMGET per partition for the states the cache lacks;
3. apply each event to its customer's state (`segments.features.apply_event`), re-evaluate only
   the segments whose inputs changed (`SegmentIndex.evaluate`), hand each change of membership
   to the `MembershipSink` (and a `member_updated` per segment it stays in when its email was
   set or changed), and mark the customer's timer for recomputation when a field that
   time-relative conditions read changed, all into the checkpoint's open group.

Due timers are fired by `streams.engine.timers` into the same open group.

What follows (sending the records, committing states and offsets) is the `Checkpoint`'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from segments.evaluator import SegmentIndex
from segments.events import TYPE_OF_CLASS, CustomerDeleted
from segments.features import FeatureState, apply_event, new_state
from streams.aio import let_io_run
from streams.broker.topics import TopicNames
from streams.engine.backfill import Backfill
from streams.engine.cache import StateCache
from streams.engine.checkpoint import Checkpoint, OpenPartition
from streams.engine.intake import Intake, Record
from streams.engine.output import BatchProducer
from streams.engine.sink import MembershipSink
from streams.engine.stats import EngineObserver, EngineStats, NoObserver
from streams.engine.timers import Timers
from streams.storage.definitions import DefinitionSet
from streams.storage.state import StateStore

APPLY_CHUNK: Final = 1000
"""Events applied between two turns of the event loop while a large batch is prepared: the
producer sends the previous batches' records, and the fetcher takes the next ones, only when
the loop turns (docs/design.md, "Turns of the event loop")."""


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
        stats: EngineStats | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self.stats = stats if stats is not None else EngineStats()
        self.observer: EngineObserver = observer if observer is not None else NoObserver()
        self.cache = StateCache(store, cache_size)
        self.intake = Intake(topics, partitions, output, self.stats)
        self.sink = MembershipSink(topics, output, self.stats)
        self.backfill = Backfill(store, self)
        self.timers = Timers(store, self)
        self.apply_chunk = APPLY_CHUNK
        self.set_definitions(definitions)

    def set_definitions(self, definitions: DefinitionSet) -> None:
        self.definitions = definitions
        self.index = SegmentIndex(definitions.live.values())
        self.sink.set_definitions(definitions)

    @property
    def owned(self) -> set[int]:
        return set(self.cache.partitions)

    def own(self, partition: int) -> None:
        self.cache.own(partition)

    def schedule(self, state: FeatureState, now_ms: int) -> int | None:
        """The customer's next re-evaluation with time alone under the current definitions."""
        return self.index.next_change(state, now_ms)

    def release(self, partitions: Iterable[int]) -> None:
        """Stop owning `partitions` (after the checkpoint drained them)."""
        partitions = set(partitions)
        self.cache.release(partitions)
        self.backfill.release(partitions)

    async def prepare(self, records: Iterable[Record], now_ms: int, checkpoint: Checkpoint
                      ) -> None:
        """Apply one batch of records of owned partitions (any topics, any order) into the
        checkpoint's open group; the batch's output records wait in the output.

        If anything fails half-way, the open group is abandoned (nothing of it is committed,
        its partitions' cached states are dropped) and the error raised: the batch is replayed
        from the offsets in Redis.
        """
        applied_before = self.stats.applied
        self.stats.batches += 1
        self.sink.new_batch(now_ms)
        split = self.intake.split(records, self.cache)
        try:
            for p, work in split.items():
                await self.cache.load(p, work.missing)
            since_turn = 0
            for p, work in split.items():
                share, events = checkpoint.partition(p), work.events
                for start in range(0, len(events), self.apply_chunk):
                    chunk = events[start:start + self.apply_chunk]
                    self._apply_all(p, share, chunk, now_ms)
                    since_turn += len(chunk)
                    if since_turn >= self.apply_chunk:
                        since_turn = 0
                        await let_io_run()
        except BaseException:
            self.cache.forget(checkpoint.abandon())
            raise
        if self.backfill.plans:
            self.stats.applied_during_backfill += self.stats.applied - applied_before
        self.sink.fold()
        self.cache.trim(checkpoint.uncommitted_customers)

    def _apply_all(self, partition: int, share: OpenPartition, events: list[Any], now_ms: int
                   ) -> None:
        """Step 3 for `events` of one partition: apply, re-evaluate, emit changes, and note the
        changed states in the partition's share of the open group."""
        cache = self.cache.of(partition)
        write, dirty, timed = share.write, share.dirty, share.timed
        evaluate, emit = self.index.evaluate, self.sink.emit
        time_fields, horizon_ms = self.index.time_fields, self.index.horizon_ms
        applied = duplicates = 0
        repeated: list[Any] = []
        for event in events:
            customer_id = event.customer_id
            state = cache.get(customer_id)
            if type(event) is CustomerDeleted:
                if state is not None:
                    emit(customer_id, state, 0, "customer_deleted", write, event.event_id)
                    cache[customer_id] = None
                    share.delete(customer_id)
                applied += 1
                continue
            if state is None:
                state = cache[customer_id] = new_state()
            email = state.email
            changed = apply_event(state, event, now_ms, horizon_ms)
            if changed is None:
                duplicates += 1
                repeated.append(event)
                continue
            applied += 1
            dirty[customer_id] = state
            if not changed.isdisjoint(time_fields):
                timed.add(customer_id)
            new_mask = evaluate(state, now_ms, changed)
            old_mask = state.segments_mask
            if new_mask != old_mask:
                emit(customer_id, state, new_mask, "event", write, event.event_id)
            if "email" in changed and old_mask & new_mask:
                self.sink.email_updated(customer_id, old_mask & new_mask, state.email, email,
                                        event.event_id)
        self.stats.applied += applied
        self.stats.duplicates += duplicates
        self._count_types(events, repeated)

    def _count_types(self, events: list[Any], repeated: list[Any]) -> None:
        """Events applied and repeated by type: one pass at C speed over the chunk, and one
        per repeated event (rare), instead of a count in the loop above."""
        by_class = Counter(map(type, events))
        by_class.subtract(map(type, repeated))
        applied, duplicates = self.stats.applied_by_type, self.stats.duplicates_by_type
        for cls, count in by_class.items():
            name = TYPE_OF_CLASS[cls]
            applied[name] = applied.get(name, 0) + count
        for event in repeated:
            name = TYPE_OF_CLASS[type(event)]
            duplicates[name] = duplicates.get(name, 0) + 1
