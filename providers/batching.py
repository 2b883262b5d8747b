"""Pure bookkeeping of the sync worker: membership changes, batches, committable offsets.

No I/O here. A ``Bucket`` gathers the changes bound for one (profile, list, segment
or tag); per customer it folds them into a ``Plan`` (``start``, then ``step`` per
record) whose ``Action`` says what the provider must do so that it holds the final
state, and keeps every record the plan stands for, so all of them count as done
together. ``OffsetTracker`` knows, per partition, the first offset not yet done:
committing up to it never skips an unconfirmed change.

The plan is safe to repeat and does not trust that an email it names is absent at
the provider: after a crash the records come again, and some of them may already
have been sent. So a member whose email changed is moved from the email the
provider may hold (a move from an absent email is an upsert), and every other email
the records named is taken out (absent ones count as done).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True, slots=True)
class Action:
    """What the provider must do for one customer: take out ``remove``, then put the member
    under ``send`` (moved from ``move_from`` when given), in the segment or tag if any."""

    send: str | None = None
    move_from: str | None = None
    remove: tuple[str, ...] = ()
    missing_email: bool = False
    """A member without an email: nothing to send; dead-lettered so it is visible."""


@dataclass(frozen=True, slots=True)
class Plan:
    """One customer's records folded: membership and newest email after them, and what the
    provider may hold. ``held`` is the email it may hold from before them: an update's
    ``previous_email``, or the email of an add or remove (an add may have been sent
    already, by a run that crashed before committing)."""

    member: bool
    email: str | None
    held: str | None
    named: tuple[str, ...]
    """Every email the records carry (``held`` and ``email`` too), in order, without
    case-insensitive repeats: any of them may be at the provider."""

    def action(self) -> Action:
        """Gone, or without an email: every email named comes out. Otherwise the member
        goes under the newest email, moved from ``held`` when that differs."""
        if not self.member or self.email is None:
            return Action(remove=self.named, missing_email=self.member)
        moved = self.held if self.held and not _same(self.held, self.email) else None
        rest = [e for e in self.named if not _same(e, self.email) and not _same(e, moved)]
        return Action(send=self.email, move_from=moved, remove=_unique(*rest))


def start(change: Change) -> Plan:
    """The plan of a customer's first record in a bucket."""
    if change.updated:
        return Plan(True, change.email or change.previous_email, change.previous_email,
                    _unique(change.previous_email, change.email))
    return Plan(change.added, change.email, change.email, _unique(change.email))


def step(plan: Plan, change: Change) -> Plan:
    """The plan after one more record of the customer. An update without an email leaves
    the newest email as it was; an add or remove carries the customer's email as it is."""
    if change.updated:
        email = change.email or plan.email
        named = _unique(*plan.named, change.previous_email, change.email)
    else:
        email, named = change.email, _unique(*plan.named, change.email)
    return replace(plan, member=change.added, email=email, named=named)


def plan_of(changes: Sequence[Change]) -> Plan:
    """``start`` with the first change, ``step`` with each later one."""
    plan = start(changes[0])
    for change in changes[1:]:
        plan = step(plan, change)
    return plan


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().lower() == b.strip().lower()


def _unique(*emails: str | None) -> tuple[str, ...]:
    """The emails given, in order, without None and case-insensitive repeats."""
    out: dict[str, str] = {}
    for email in emails:
        if email is not None:
            out.setdefault(email.strip().lower(), email)
    return tuple(out.values())


@dataclass(slots=True)
class Pending:
    """A customer's records in a bucket, the last of them, and the plan they fold into."""

    latest: Change
    records: list[Change]
    plan: Plan


@dataclass
class Bucket:
    """Changes for one target, coalesced per customer in arrival order."""

    target: Target
    opened_at: float
    items: OrderedDict[str, Pending] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, change: Change) -> None:
        """Take a change; it folds into the plan of the customer's earlier ones."""
        pending = self.items.get(change.customer_id)
        if pending is None:
            self.items[change.customer_id] = Pending(change, [change], start(change))
        else:
            pending.latest = change
            pending.records.append(change)
            pending.plan = step(pending.plan, change)

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
