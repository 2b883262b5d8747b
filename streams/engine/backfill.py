"""Backfill: a partition's stored customers re-evaluated after the segment definitions changed.

A partition records, in its meta, the fingerprint of the definitions its memberships match
(`DefinitionSet.fingerprint`). When the definitions change, or a partition is assigned whose
fingerprint differs, a backfill is planned; it then runs one chunk of customers at a time between
live batches (`step`), so a new segment over millions of customers does not stall live
processing. Live events meanwhile evaluate against the new definitions already; the backfill
emits only what still differs when it reaches a customer (`reason: backfill`), so nothing is
emitted twice, and schedules each customer's next re-evaluation with time alone under the new
definitions. Each step writes into the checkpoint's open group like a live batch; the step that
finishes the scan also records the fingerprint. A crash restarts that partition's scan:
evaluation is idempotent and membership ids deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segments.features import decode_state
from streams.engine.checkpoint import Checkpoint
from streams.storage.state import PartitionWrite, StateStore

if TYPE_CHECKING:
    from streams.engine.engine import Engine


@dataclass
class BackfillPlan:
    """Progress of one partition's backfill towards the definitions `fingerprint`."""

    fingerprint: str
    cursor: int = 0
    scanned: int = 0


class Backfill:
    """The planned backfills of an engine's partitions."""

    def __init__(self, store: StateStore, engine: Engine) -> None:
        self._store = store
        self._engine = engine
        self.plans: dict[int, BackfillPlan] = {}

    def release(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.plans.pop(p, None)

    async def plan(self, partition: int, checkpoint: Checkpoint) -> bool:
        """Plan a backfill of `partition` if its memberships predate the current definitions;
        whether one is planned.

        A partition that holds no customer state, stored or in flight (a first start), needs
        none: it records the fingerprint in the open group at once. Planned, its one empty step
        would come after the first live batch and close that batch's group early.
        """
        fingerprint = self._engine.definitions.fingerprint()
        meta = await self._store.load_meta(partition)
        if meta.get("definitions") == fingerprint:
            self.plans.pop(partition, None)
            return False
        if not checkpoint.holds_states(partition) and not await self._store.holds_states(
            partition
        ):
            self.plans.pop(partition, None)
            self._mark_done(checkpoint.partition(partition).write, fingerprint)
            return False
        self.plans[partition] = BackfillPlan(fingerprint)
        return True

    async def step(self, partition: int, now_ms: int, chunk: int, checkpoint: Checkpoint
                   ) -> int:
        """Re-evaluate the next `chunk` stored customers of `partition` into the checkpoint's
        open group; returns the membership changes emitted."""
        plan = self.plans.get(partition)
        engine = self._engine
        if plan is None or partition not in engine.cache.partitions:
            return 0
        engine.sink.new_batch(now_ms)
        cache = engine.cache.of(partition)
        share = checkpoint.partition(partition)
        plan.cursor, blobs = await self._store.scan_states(partition, plan.cursor, chunk)
        timed = bool(engine.index.time_fields)  # the definitions have time-relative segments
        flips = 0
        for customer_id, blob in blobs.items():
            if customer_id in cache:  # the cache is newer than Redis while a commit is due
                state = cache[customer_id]
                if state is None:
                    continue  # deleted; the deletion is not committed yet
            else:
                state = decode_state(blob)
            new_mask = engine.index.evaluate_all(state, now_ms)
            if new_mask != state.segments_mask:
                flips += (state.segments_mask ^ new_mask).bit_count()
                engine.sink.emit(customer_id, state, new_mask, "backfill", share.write, None)
                cache[customer_id] = state  # one state per customer: live events see this one
                share.put(customer_id, state)
            if timed and customer_id not in share.timed:
                share.write.timers[customer_id] = engine.index.next_change(state, now_ms)
        plan.scanned += len(blobs)
        if plan.cursor == 0:
            self._mark_done(share.write, plan.fingerprint)
            del self.plans[partition]
        engine.stats.backfilled += flips
        engine.sink.fold()
        return flips

    def _mark_done(self, write: PartitionWrite, fingerprint: str) -> None:
        """What a finished backfill adds to its write: the definitions it reached; deleted
        segments' counts go."""
        definitions = self._engine.definitions
        write.meta["definitions"] = fingerprint
        dead = {tomb[0] for tomb in definitions.tombstones.values()}
        write.drop_segments = dead - set(definitions.live)
