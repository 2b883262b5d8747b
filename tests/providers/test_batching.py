"""The worker's pure bookkeeping: coalescing per customer, offsets safe to commit, dedupe."""

from __future__ import annotations

import orjson
import pytest

from providers.batching import (
    Bucket,
    Change,
    OffsetTracker,
    SeenIds,
    Target,
    outage_delay,
)
from segments.membership import ADDED, REMOVED, InvalidMembership

TARGET = Target("prof", "list", "seg")


def change(offset: int, customer: str, added: bool, partition: int = 0) -> Change:
    body = {"event_id": f"e{offset}", "type": ADDED if added else REMOVED, "segment_id": "s",
            "segment_version": 1, "customer_id": customer, "email": f"{customer}@x.test",
            "changed_at": "2026-01-01T00:00:00.000Z", "reason": "event"}
    return Change.parse(("t", partition), offset, customer.encode(), orjson.dumps(body))


def test_add_then_remove_coalesces_to_the_final_state_keeping_every_record() -> None:
    bucket = Bucket(TARGET, 0.0)
    for c in (change(0, "a", True), change(1, "b", True), change(2, "a", False)):
        bucket.add(c)
    assert list(bucket.items) == ["a", "b"]
    assert bucket.items["a"].latest.added is False
    assert [c.offset for c in bucket.items["a"].records] == [0, 2]


def test_absorb_puts_newer_changes_on_top() -> None:
    older, newer = Bucket(TARGET, 0.0), Bucket(TARGET, 1.0)
    older.add(change(0, "a", True))
    newer.add(change(5, "a", False))
    newer.add(change(6, "c", True))
    older.absorb(newer)
    assert older.items["a"].latest.offset == 5 and len(older) == 2


def test_drop_partitions_forgets_revoked_changes() -> None:
    bucket = Bucket(TARGET, 0.0)
    bucket.add(change(0, "a", True, partition=0))
    bucket.add(change(0, "b", True, partition=1))
    bucket.drop_partitions([("t", 1)])
    assert list(bucket.items) == ["a"]


def test_offsets_commit_only_up_to_the_first_change_not_done() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.read(("t", 0), offset)
    for offset in (0, 1, 3, 4):
        tracker.done(("t", 0), offset)
    assert tracker.to_commit() == {("t", 0): 2}
    tracker.committed({("t", 0): 2})
    assert tracker.to_commit() == {}
    tracker.done(("t", 0), 2)
    assert tracker.to_commit() == {("t", 0): 5}


def test_seen_ids_drop_duplicates_and_stay_bounded() -> None:
    seen = SeenIds(capacity=2)
    assert not seen.seen("a") and seen.seen("a")
    seen.seen("b")
    seen.seen("c")
    assert not seen.seen("a")  # forgotten: the oldest went first


def test_bad_records_are_rejected_with_a_reason() -> None:
    with pytest.raises(InvalidMembership, match="JSON"):
        Change.parse(("t", 0), 0, None, b"{nope")
    with pytest.raises(InvalidMembership, match="customer_id"):
        Change.parse(("t", 0), 0, None, orjson.dumps({"type": ADDED, "event_id": "e",
                                                       "segment_id": "s"}))


def test_missing_or_blank_email_is_none() -> None:
    body = {"event_id": "e", "type": ADDED, "segment_id": "s", "customer_id": "c", "email": " "}
    assert Change.parse(("t", 0), 0, None, orjson.dumps(body)).email is None


def test_outage_delay_grows_and_caps() -> None:
    assert [outage_delay(n, 1.0, 5.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
