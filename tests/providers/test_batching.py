"""The worker's pure bookkeeping: coalescing per customer, offsets safe to commit, dedupe."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.batching import (
    Action,
    Bucket,
    Change,
    OffsetTracker,
    SeenIds,
    Target,
    outage_delay,
    plan_of,
)
from segments.membership import ADDED, REMOVED, UPDATED, InvalidMembership

TARGET = Target("prof", "list", "seg")


def change(offset: int, customer: str, added: bool, partition: int = 0) -> Change:
    body = {"event_id": f"e{offset}", "type": ADDED if added else REMOVED, "segment_id": "s",
            "segment_version": 1, "customer_id": customer, "email": f"{customer}@x.test",
            "changed_at": "2026-01-01T00:00:00.000Z", "reason": "event"}
    return Change.parse(("t", partition), offset, customer.encode(), orjson.dumps(body))


def record(offset: int, kind: str, email: str | None, previous: str | None = None,
           customer: str = "c") -> Change:
    body: dict[str, Any] = {
        "event_id": f"e{offset}", "type": kind, "segment_id": "s", "segment_version": 1,
        "customer_id": customer, "email": email, "changed_at": "2026-01-01T00:00:00.000Z",
        "reason": "event"}
    if kind == UPDATED:
        body["previous_email"] = previous
    return Change.parse(("t", 0), offset, customer.encode(), orjson.dumps(body))


def add(email: str | None) -> tuple[str, str | None, None]:
    return (ADDED, email, None)


def remove(email: str | None) -> tuple[str, str | None, None]:
    return (REMOVED, email, None)


def update(previous: str | None, email: str | None) -> tuple[str, str | None, str | None]:
    return (UPDATED, email, previous)


def action_of(*steps: tuple[str, str | None, str | None]) -> Action:
    return plan_of([record(i, kind, email, prev) for i, (kind, email, prev) in
                    enumerate(steps)]).action()


# The coalescing rules, one row each: a customer's records in one batch -> what is sent.
RULES = [
    ([add("a")], Action(send="a")),
    ([add(None)], Action(missing_email=True)),
    ([remove("a")], Action(remove=("a",))),
    ([remove(None)], Action()),  # nothing the provider can hold: done
    ([add("a"), remove("a")], Action(remove=("a",))),
    ([remove("a"), add("a")], Action(send="a")),
    ([add(None), update(None, "b")], Action(send="b")),
    ([update(None, "b")], Action(send="b")),  # the email of a skipped member arrived
    ([update("a", "b")], Action(send="b", move_from="a")),
    # the add may have been sent by a run that crashed: move, which upserts if a is absent
    ([add("a"), update("a", "b")], Action(send="b", move_from="a")),
    ([update("a", "b"), update("b", "c")], Action(send="c", move_from="a", remove=("b",))),
    ([update(None, "b"), update("b", "c")], Action(send="c", remove=("b",))),
    ([update("a", "b"), update("b", "a")], Action(send="a", remove=("b",))),
    ([update("a", "B@x"), update("b@x", "b@X")], Action(send="b@X", move_from="a")),
    ([update("a", "b"), remove("b")], Action(remove=("a", "b"))),
    ([add("a"), update("a", "b"), remove("b")], Action(remove=("a", "b"))),
    ([update("a", None)], Action(send="a")),  # no new email: the newest known stays
    ([remove("a"), add("b")], Action(send="b", move_from="a")),
    ([remove("a"), add(None)], Action(remove=("a",), missing_email=True)),
    ([add("a"), remove("a"), add(None)], Action(remove=("a",), missing_email=True)),
]


@pytest.mark.parametrize(("steps", "want"), RULES)
def test_each_customer_coalesces_to_the_action_that_leaves_the_final_state(
    steps: list[tuple[str, str | None, str | None]], want: Action
) -> None:
    assert action_of(*steps) == want


def _apply(action: Action, held: set[str]) -> set[str]:
    """A provider's segment after ``action`` (a move from an absent email is an upsert)."""
    after = held - {e.lower() for e in action.remove}
    if action.move_from is not None:
        after.discard(action.move_from.lower())
    if action.send is not None:
        after.add(action.send.lower())
    return after


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Change], int]:
    """A customer's membership records as the processor writes them, and where the
    batch starts (the records before it were committed)."""
    emails = st.sampled_from([None, "a@x", "b@x", "c@x", "A@X"])
    member, email = False, draw(emails)
    records: list[Change] = []
    for i, move in enumerate(draw(st.lists(st.sampled_from("jle"), max_size=8))):
        if move == "e":
            new = draw(emails)
            if member and (new or "").lower() != (email or "").lower():
                records.append(record(i, UPDATED, new, email))
            email = new
        elif (move == "j") != member:
            member = move == "j"
            records.append(record(i, ADDED if member else REMOVED, email))
    if not records:
        records.append(record(99, ADDED, email))
    return records, draw(st.integers(0, len(records) - 1))


@given(histories(), st.data())
def test_the_action_leaves_exactly_the_newest_email_whatever_the_provider_held(
    history: tuple[list[Change], int], data: st.DataObject
) -> None:
    """Whatever part of the batch an earlier run sent before it crashed, the segment ends
    with the member's newest email, or none of the customer's emails when it left."""
    records, first = history
    batch = records[first:]
    plan = plan_of(batch)
    named = {e.lower() for c in batch for e in (c.email, c.previous_email) if e}
    held = data.draw(st.sets(st.sampled_from(sorted(named)))) if named else set()
    last = batch[-1]
    newest = next((c.email for c in reversed(records) if c.email or not c.updated), None)
    want = {newest.lower()} if last.added and newest else set()
    assert _apply(plan.action(), held) == want
    assert plan.action().missing_email == (last.added and newest is None)


def test_add_then_remove_coalesces_to_the_final_state_keeping_every_record() -> None:
    bucket = Bucket(TARGET, 0.0)
    for c in (change(0, "a", True), change(1, "b", True), change(2, "a", False)):
        bucket.add(c)
    assert list(bucket.items) == ["a", "b"]
    assert bucket.items["a"].latest.added is False
    assert bucket.items["a"].plan.action() == Action(remove=("a@x.test",))
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
