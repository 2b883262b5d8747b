"""Pure bookkeeping of the sync worker: membership changes, batches, committable offsets.

No I/O here. A ``Bucket`` gathers the changes bound for one (profile, list, segment
or tag); per customer it keeps the final state (an add then a remove becomes the
remove) and every record that state stands for, so all of them count as done
together. ``OffsetTracker`` knows, per partition, the first offset not yet done:
committing up to it never skips an unconfirmed change.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from segments.membership import UPDATED, parse_membership

TP = tuple[str, int]
"""(topic, partition), kept free of aiokafka so this module stays pure."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a segment's members go: a profile's list, and optionally a segment or tag."""

    profile_id: str
    list_id: str
    segment_id: str | None

    @classmethod
    def from_auto_responder(cls, value: Mapping[str, Any]) -> Target:
        segment = value.get("segment_id")
        return cls(str(value["profile_id"]), str(value["list_id"]),
                   str(segment) if segment else None)


@dataclass(frozen=True, slots=True)
class Change:
    """One membership record as read from Kafka."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes
    event_id: str
    segment_id: str
    customer_id: str
    email: str | None
    added: bool
    """Whether the customer is a member after this change (``member_updated`` too)."""
    updated: bool = False
    """A ``member_updated``: the member's email was set or changed."""
    previous_email: str | None = None

    @classmethod
    def parse(cls, tp: TP, offset: int, key: bytes | None, value: bytes) -> Change:
        """Decode a record read at ``tp``/``offset``; ``InvalidMembership`` if it is none."""
        body = parse_membership(value)
        return cls(tp, offset, key, value, body.event_id, body.segment_id, body.customer_id,
                   body.email, body.member, body.kind == UPDATED, body.previous_email)


@dataclass(slots=True)
class Pending:
    """A customer's final state in a bucket, and every record it stands for."""

    latest: Change
    records: list[Change]


@dataclass
class Bucket:
    """Changes for one target, coalesced per customer in arrival order."""

    target: Target
    opened_at: float
    items: OrderedDict[str, Pending] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, change: Change) -> None:
        """Take a change; a later change of the same customer replaces the earlier one."""
        pending = self.items.get(change.customer_id)
        if pending is None:
            self.items[change.customer_id] = Pending(change, [change])
        else:
            pending.latest = change
            pending.records.append(change)

    def absorb(self, newer: Bucket) -> None:
        """Put ``newer``'s changes on top of this bucket's (they came later)."""
        for pending in newer.items.values():
            for change in pending.records:
                self.add(change)

    def partitions(self) -> set[TP]:
        return {c.tp for p in self.items.values() for c in p.records}

    def drop_partitions(self, tps: Iterable[TP]) -> None:
        """Forget changes read from partitions this worker no longer owns."""
        gone = set(tps)
        for customer, pending in list(self.items.items()):
            if pending.latest.tp in gone:
                del self.items[customer]


class OffsetTracker:
    """Per partition: offsets read but not done, and the next offset to read."""

    def __init__(self) -> None:
        self._pending: dict[TP, dict[int, None]] = {}
        self._next: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def read(self, tp: TP, offset: int) -> None:
        self._pending.setdefault(tp, {})[offset] = None
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TP, offset: int) -> None:
        self._pending.get(tp, {}).pop(offset, None)

    def pending_count(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def commit_point(self, tp: TP) -> int | None:
        """The offset to commit: the first not done (offsets are read in increasing order)."""
        pending = self._pending.get(tp)
        if pending:
            return next(iter(pending))
        return self._next.get(tp)

    def to_commit(self) -> dict[TP, int]:
        """Commit points that moved since the last ``committed``."""
        out = {}
        for tp in self._next:
            point = self.commit_point(tp)
            if point is not None and point > self._committed.get(tp, -1):
                out[tp] = point
        return out

    def committed(self, offsets: Mapping[TP, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop partitions that were revoked."""
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)


class SeenIds:
    """Event ids already taken, bounded (oldest forgotten first): drops duplicates."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def seen(self, event_id: str) -> bool:
        """True when ``event_id`` was taken before; otherwise remember it."""
        if event_id in self._ids:
            self._ids.move_to_end(event_id)
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False

    def clear(self) -> None:
        self._ids.clear()


def outage_delay(failures: int, base: float, cap: float) -> float:
    """Seconds to hold a profile after its ``failures``-th consecutive outage."""
    return float(min(cap, base * 2 ** max(failures - 1, 0)))
