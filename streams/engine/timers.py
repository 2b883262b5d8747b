"""Due timers: customers re-evaluated because time alone may have changed their memberships.

Each customer has at most one timer, the instant `SegmentIndex.next_change` gives after its
latest evaluation, kept in its partition's `timers` sorted set and written by the same atomic
commit as its state (`streams.storage.state`). So timers survive crashes and move with their
partition; a timer due while no process owned the partition fires once one does: late, never
lost.

The owner polls the due ones (`fire_due`, one round trip for its partitions) and, like a live
batch, into the checkpoint's open group: loads the states the cache lacks, evaluates the
time-relative segments and those built on them at now (`NO_CHANGE`), emits each flip with
`reason: time` and an id derived from the timer's due instant (a timer fired twice, before and
after a crash, gives the same flip the same id), and writes the customer's next timer, or none.

A timer whose customer has an uncommitted newer one (an event, or an earlier firing, in a group
not committed yet) is left to that one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from segments.evaluator import NO_CHANGE
from streams.engine.checkpoint import NOT_PENDING, RESCHEDULED, Checkpoint
from streams.storage.state import StateStore

if TYPE_CHECKING:
    from streams.engine.engine import Engine

FIRE_CHUNK: Final = 2000
"""Due timers read per partition and poll: a backlog of due timers goes a chunk per loop turn,
between live batches."""


class Timers:
    """Fires the due timers of an engine's partitions."""

    def __init__(self, store: StateStore, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        self.backlog = False
        """Whether the last poll left due timers for the next one (a full chunk)."""

    async def fire_due(self, partitions: Iterable[int], now_ms: int, checkpoint: Checkpoint
                       ) -> int:
        """Re-evaluate every customer whose timer is due at `now_ms` (up to `FIRE_CHUNK` per
        partition) into the checkpoint's open group; returns how many fired."""
        owned = sorted(set(partitions) & set(self._engine.cache.partitions))
        if not owned:
            return 0
        due = await self._store.due_timers(owned, now_ms, FIRE_CHUNK)
        fired, full = 0, False
        for p, timers in due.items():
            firing = self._still_due(p, timers, now_ms, checkpoint)
            fired += await self._fire(p, firing, now_ms, checkpoint)
            # a full chunk leaves more for the next turn, unless all of it was left to
            # uncommitted newer timers (reading them again at once would spin until the commit)
            full |= len(timers) >= FIRE_CHUNK and bool(firing)
        self.backlog = full
        self._engine.cache.trim(checkpoint.uncommitted_customers)  # the states firing loaded
        return fired

    @staticmethod
    def _still_due(partition: int, timers: list[tuple[str, int]], now_ms: int,
                   checkpoint: Checkpoint) -> list[tuple[str, int]]:
        """The due timers that uncommitted writes have not replaced."""
        due = []
        for customer_id, at in timers:
            pending = checkpoint.pending_timer(partition, customer_id)
            if pending is NOT_PENDING:
                due.append((customer_id, at))
            elif pending is not RESCHEDULED and isinstance(pending, int) and pending <= now_ms:
                due.append((customer_id, pending))
        return due

    async def _fire(self, partition: int, due: list[tuple[str, int]], now_ms: int,
                    checkpoint: Checkpoint) -> int:
        if not due:
            return 0
        engine = self._engine
        cache = engine.cache.of(partition)
        await engine.cache.load(partition, {c for c, _ in due if c not in cache})
        engine.sink.new_batch(now_ms)
        share = checkpoint.partition(partition)
        write, index, stats = share.write, engine.index, engine.stats
        scheduled = 0
        for customer_id, at in due:
            state = cache.get(customer_id)
            if state is None:  # deleted since: no state, no timer
                write.timers[customer_id] = None
                continue
            new_mask = index.evaluate(state, now_ms, NO_CHANGE)
            if new_mask != state.segments_mask:
                stats.time_changes += (state.segments_mask ^ new_mask).bit_count()
                engine.sink.emit(customer_id, state, new_mask, "time", write, None,
                                 cause=f"time@{at}")
                share.put(customer_id, state)
            at_next = write.timers[customer_id] = index.next_change(state, now_ms)
            scheduled += at_next is not None
        stats.timers_fired += len(due)
        stats.timers_scheduled += scheduled
        stats.timer_lateness_ms = now_ms - min(at for _, at in due)
        engine.sink.fold()
        engine.observer.timers_fired(len(due), stats.timer_lateness_ms / 1000)
        return len(due)
