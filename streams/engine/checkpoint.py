"""What one Redis commit holds, and the order in which batches finish.

The processor applies batches into the checkpoint's open group and hands each batch over; the
checkpoint commits groups in the order they were opened. One group goes through these steps:

1. **Apply.** The engine applies a batch's events to the cached states and writes the new
   memberships, member counts and dirty customers into the open group (`partition(p)`);
   `advance` adds the batch's consumed positions (every record's, dead letters and forwarded
   strays included).
2. **Produce.** `hand_over` gives the batch's output records (membership changes, dead letters,
   forwarded strays) to the producer at once; a partition's records go out in hand-over order.
3. **Close.** The group closes with the batch that `GroupPolicy` says closes it (a batch smaller
   than `from_records`, `max_events` reached, `max_age` passed), or on `close` (an empty poll)
   or `drain` (before anything else touches the partitions' state: definitions, backfill plans,
   rebalance, shutdown). Each dirty customer's state is encoded once for the whole group, and
   each customer whose time-relevant fields changed gets its next re-evaluation (`schedule`,
   from the group's first `now`: never later than a batch's own).
4. **Flush.** The group's commit waits until the broker acknowledged the records of every batch
   in it.
5. **Commit.** After the previous group's commit, one atomic script call per partition writes
   the states, membership masks, member counts, timers and the next offsets to read
   (`StateStore.commit_many`). Each carries the partition's next commit number: a retried
   call applies once, and a commit finding another writer's in its place (the partition moved
   on, or Redis lost acknowledged writes) fails with `CommitFenced` instead of applying.
6. **Report.** The Kafka positions the group covered are handed out by `take_committed`, for
   the processor to commit to the consumer group (lag tools read those); Redis offsets remain
   the truth.

A crash before step 5 replays the group from the offsets stored in Redis: every event is applied
exactly once, and a membership record may be produced again with the same deterministic id;
none is lost, since a group commits only after its own records were acknowledged.

While one group flushes and commits, the next batches are applied: `hand_over` returns once the
group two back is done, so two commits overlap the CPU work of preparing a third batch.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from segments.features import FeatureState, encode_state
from streams.aio import let_io_run
from streams.engine.output import BatchProducer
from streams.engine.stats import EngineStats
from streams.storage.state import PartitionWrite, StateStore

Position = tuple[str, int]
"""(topic, partition) of a consumed record."""


@dataclass(frozen=True)
class GroupPolicy:
    """When an open commit group closes. Under a backlog, batches of `from_records` records or
    more share one commit, so each customer is encoded and written once per group instead of
    once per fetch; `max_events` and `max_age` bound what a crash replays and how long records
    wait for their commit."""

    from_records: int = 2_000
    max_events: int = 60_000
    max_age: float = 1.0


@dataclass
class OpenPartition:
    """One partition's share of the open group: its write, the customers whose state the group
    changed (encoded when the group closes) and those whose timer must be computed again then
    (`timed`, a subset of `dirty`)."""

    write: PartitionWrite = field(default_factory=PartitionWrite)
    dirty: dict[str, FeatureState] = field(default_factory=dict)
    timed: set[str] = field(default_factory=set)

    def put(self, customer_id: str, state: FeatureState) -> None:
        self.dirty[customer_id] = state

    def delete(self, customer_id: str) -> None:
        self.dirty.pop(customer_id, None)
        self.timed.discard(customer_id)
        self.write.delete_state(customer_id)
        self.write.timers[customer_id] = None


RESCHEDULED: Final = object()
NOT_PENDING: Final = object()
"""`pending_timer`: the customer's timer is computed again when the open group closes."""
Schedule = Callable[[FeatureState, int], "int | None"]


@dataclass
class _Group:
    partitions: dict[int, OpenPartition] = field(default_factory=dict)
    positions: dict[Position, int] = field(default_factory=dict)
    events: int = 0
    opened_at: float = 0.0
    now_ms: int | None = None
    """The first batch's `now`: timers of the group are computed from it."""


class Checkpoint:
    """The open commit group and the groups in flight; see the module docstring."""

    def __init__(
        self, store: StateStore, output: BatchProducer, policy: GroupPolicy,
        schedule: Schedule, clock: Callable[[], float] = time.monotonic,
        stats: EngineStats | None = None,
    ) -> None:
        self._store = store
        self._stats = stats if stats is not None else EngineStats()
        self._output = output
        self._policy = policy
        self._schedule = schedule
        self._clock = clock
        self._group: _Group | None = None
        self._closed: list[dict[int, PartitionWrite]] = []
        """Writes of closed groups not committed yet, oldest first."""
        self._finishing: asyncio.Future[None] | None = None
        """The latest group's flush and commit; it waits for `_older`'s before committing."""
        self._older: asyncio.Future[None] | None = None
        self._seq: dict[int, int] = {}
        """Partition -> number of its last commit, for commits guarded against other writers."""
        self.owner = uuid.uuid4().hex
        """This checkpoint's name as the writer of the partitions it claims."""
        self._committed: dict[Position, int] = {}
        """Next positions to read, per topic-partition, committed since the last take."""
        self.commits = 0

    # -- step 1: the open group --------------------------------------------------------------

    def partition(self, partition: int) -> OpenPartition:
        """The open group's share of `partition`, opening the group if none is open."""
        group = self._open()
        found = group.partitions.get(partition)
        if found is None:
            found = group.partitions[partition] = OpenPartition()
        return found

    def begin(self, events: int, now_ms: int) -> bool:
        """Count a batch of `events` records, applied at `now_ms`, into the open group (opening
        one); whether this batch closes the group."""
        group = self._open()
        group.events += events
        if group.now_ms is None:
            group.now_ms = now_ms
        return (events < self._policy.from_records
                or group.events >= self._policy.max_events
                or self._clock() - group.opened_at >= self._policy.max_age)

    def advance(self, positions: Mapping[tuple[str, int], int]) -> None:
        """The batch's next positions to read, per (topic, partition): stored in Redis with
        the group's state, reported to the consumer group after the commit."""
        for (topic, partition), offset in positions.items():
            self.partition(partition).write.offsets[f"{topic}:{partition}"] = offset
            self._open().positions[(topic, partition)] = offset

    @property
    def is_open(self) -> bool:
        """Whether applied batches wait for their group to close."""
        return self._group is not None

    @property
    def idle(self) -> bool:
        """Nothing applied that is not committed."""
        return self._group is None and not self._closed and self._finishing is None

    def holds_states(self, partition: int) -> bool:
        """Whether states of `partition` were changed and are not committed yet."""
        share = self._group.partitions.get(partition) if self._group is not None else None
        if share is not None and (share.dirty or share.write.deleted):
            return True
        return any(w.states or w.deleted for writes in self._closed
                   for p, w in writes.items() if p == partition)

    def pending_timer(self, partition: int, customer_id: str) -> object:
        """The customer's timer as uncommitted writes leave it: an instant, None (removed),
        `RESCHEDULED` (computed when the open group closes), or `NOT_PENDING` (Redis's holds)."""
        share = self._group.partitions.get(partition) if self._group is not None else None
        if share is not None:
            if customer_id in share.timed:
                return RESCHEDULED
            if customer_id in share.write.timers:
                return share.write.timers[customer_id]
        for writes in reversed(self._closed):
            write = writes.get(partition)
            if write is not None and customer_id in write.timers:
                return write.timers[customer_id]
        return NOT_PENDING

    def uncommitted_customers(self) -> set[str]:
        """Customers whose newest state is not in Redis yet: a cache must keep them, since
        loading them back from Redis before the commit would read an older state."""
        keep: set[str] = set()
        for writes in self._closed:
            for write in writes.values():
                keep.update(write.states)
                keep.update(write.deleted)
        if self._group is not None:
            for share in self._group.partitions.values():
                keep.update(share.dirty)
                keep.update(share.write.deleted)
        return keep

    def abandon(self) -> set[int]:
        """After a batch failed half applied: drop the open group, uncommitted, so that nothing
        reaches Redis with offsets past events never applied; returns its partitions, whose
        cached states must be dropped too. The group is replayed from the offsets in Redis."""
        group, self._group = self._group, None
        return set(group.partitions) if group is not None else set()

    async def claim(self, partition: int) -> None:
        """Become the only writer of `partition` in Redis: commits of its earlier owner (a
        process that lost it but does not know yet) are fenced from now on."""
        self._seq[partition] = await self._store.claim(partition, self.owner)

    def release(self, partitions: Iterable[int]) -> None:
        """Partitions this process no longer owns (after `drain`): forget their positions."""
        gone = set(partitions)
        if self._group is not None:
            for p in gone:
                self._group.partitions.pop(p, None)
        self._committed = {tp: o for tp, o in self._committed.items() if tp[1] not in gone}
        for p in gone:
            self._seq.pop(p, None)

    def take_committed(self) -> dict[Position, int]:
        """Step 6: the positions committed in Redis since the last call, for the consumer
        group's own offsets (what lag tools read)."""
        committed, self._committed = self._committed, {}
        return committed

    def _open(self) -> _Group:
        if self._group is None:
            self._group = _Group(opened_at=self._clock())
        return self._group

    # -- steps 2-6 ----------------------------------------------------------------------------

    async def hand_over(self, close: bool, sent: Callable[[], None] | None = None) -> None:
        """Send the records added to the output since the last hand-over (a batch's); with
        `close`, close the group and queue its commit. `sent` is called when the broker has
        acknowledged them (not when the send failed).

        Returns once the group two back is committed (its error, if any, is raised here).
        """
        sending = asyncio.ensure_future(self._output.send(self._output.detach()))
        if sent is not None:
            sending.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() is not None else sent())
        try:
            await let_io_run()  # the produce request leaves before the next batch's CPU work
            older, self._older = self._older, None
            if older is not None:
                await older
        except BaseException:
            sending.cancel()
            raise
        writes, positions = self._close() if close else (None, {})
        self._older = previous = self._finishing
        self._finishing = asyncio.ensure_future(
            self._finish(writes, positions, sending, previous))

    async def close(self) -> None:
        """Close the open group, if any, as a batch with no records of its own."""
        if self._group is not None:
            await self.hand_over(close=True)

    @property
    def finishing(self) -> asyncio.Future[None] | None:
        """The latest flush and commit in flight, for a loop that waits on it beside a fetch."""
        return self._finishing

    async def settle(self) -> None:
        """Wait until every group handed over is committed (the latest waits for the others)."""
        finishing, self._finishing, self._older = self._finishing, None, None
        if finishing is not None:
            await finishing

    async def drain(self) -> None:
        """Close the open group and wait for every commit."""
        await self.close()
        await self.settle()

    def _close(self) -> tuple[dict[int, PartitionWrite], dict[Position, int]]:
        """Step 3: encode each dirty state once; the group's writes leave it."""
        group, self._group = self._group, None
        if group is None:
            return {}, {}
        writes: dict[int, PartitionWrite] = {}
        schedule, now_ms = self._schedule, group.now_ms
        for p, share in group.partitions.items():
            write = share.write
            for customer_id, state in share.dirty.items():
                write.put_state(customer_id, encode_state(state))
            if share.timed:
                assert now_ms is not None, "a batch applied without begin()"
                dirty, timers = share.dirty, write.timers
                scheduled = 0
                for customer_id in share.timed:
                    at = timers[customer_id] = schedule(dirty[customer_id], now_ms)
                    scheduled += at is not None
                self._stats.timers_scheduled += scheduled
            if p in self._seq:
                self._seq[p] += 1
                write.seq, write.owner = self._seq[p], self.owner
            writes[p] = write
        self._closed.append(writes)
        return writes, group.positions

    async def _finish(
        self, writes: dict[int, PartitionWrite] | None, positions: dict[Position, int],
        sending: asyncio.Future[None], previous: asyncio.Future[None] | None,
    ) -> None:
        try:
            await sending  # step 4
        finally:  # even when the send failed: the chain is awaited whole, no error unseen
            if previous is not None:
                await previous  # commits stay in order; its error is this group's too
        if writes is None:
            return  # the batch's group stays open: a later hand-over commits it
        await self._store.commit_many(writes)  # step 5
        self.commits += 1
        self._closed = [w for w in self._closed if w is not writes]
        self._committed.update(positions)  # step 6
