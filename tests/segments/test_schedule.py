"""When memberships change with time alone: each condition's instant, on a controlled clock,
and properties over random states and definitions (nothing changes before the instant)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.definitions import parse_definition
from segments.evaluator import NO_CHANGE, SegmentIndex
from segments.events import CustomerDeleted, Event
from segments.features import FeatureState, apply_event, new_state
from tests.segments.helpers import DAY, HOUR, T0_MS, cond, event, order, segment
from tests.segments.strategies import definition_sets, event_streams

NOW = T0_MS


def index_of(*raws: dict[str, Any]) -> SegmentIndex:
    return SegmentIndex([segment([raw], segment_id=f"s{i}", slot=i)
                         for i, raw in enumerate(raws)])


def customer(*events: Event, now: int = NOW, horizon: int = 366 * DAY) -> FeatureState:
    state = new_state()
    for ev in events:
        apply_event(state, ev, now, horizon)
    return state


def test_no_order_in_60_days_flips_exactly_when_the_last_order_is_60_days_old() -> None:
    lapsed = cond("last_order_at", "not_within_last", {"days": 60})
    recent = cond("last_order_at", "within_last", {"days": 60})
    index = index_of(lapsed, recent)
    state = customer(order("o1", 10, at=NOW - 60 * DAY + 5_000))
    at = index.next_change(state, NOW)
    assert at == NOW + 5_001
    assert index.evaluate_all(state, at - 1) == 0b10  # still recent
    assert index.evaluate_all(state, at) == 0b01  # now lapsed
    assert index.next_change(state, at) is None  # nothing more can change without an event
    [first, second] = index.time_changes(state, NOW)
    assert (first.at_ms, first.segment_id, first.path) == (at, "s0", "groups[0].conditions[0]")
    assert second.segment_id == "s1"


def test_a_customer_without_the_time_has_no_timer() -> None:
    index = index_of(cond("last_order_at", "within_last", {"days": 1}))
    assert index.next_change(new_state(), NOW) is None
    assert index.time_changes(new_state(), NOW) == []


def test_three_orders_within_30_days_ends_when_the_oldest_of_them_ages_out() -> None:
    index = index_of(cond("order_count", "gte", 3, within_days=30))
    state = customer(*(order(f"o{n}", 10, at=NOW - days * DAY)
                       for n, days in enumerate([40, 29, 20, 2])))
    assert index.evaluate_all(state, NOW) == 1
    at = index.next_change(state, NOW)
    assert at == NOW + DAY + 1  # the 29-day-old order leaves the window first
    assert index.evaluate_all(state, at) == 0
    assert index.next_change(state, at) == NOW + 10 * DAY + 1  # then the next one


def test_spent_in_the_window_moves_with_refunds_too() -> None:
    index = index_of(cond("total_spent", "gte", 50, within_days=7))
    state = customer(order("o1", 100, at=NOW - 6 * DAY),
                     event("order.refunded", {"order_id": "o1", "amount": 60},
                           at=NOW - 3 * DAY))
    assert index.evaluate_all(state, NOW) == 0  # 100 - 60
    at = index.next_change(state, NOW)
    assert at == NOW + DAY + 1  # the order leaves; only the refund is left: -60
    assert index.evaluate_all(state, at + 3 * DAY + 1) == 0


def test_bought_a_product_in_the_last_30_days() -> None:
    index = index_of(cond("products_purchased", "includes_any", ["p-a"], within_days=30),
                     cond("categories_purchased", "exists", within_days=7))
    line = {"products": [{"product_id": "p-a", "category": "coffee"}]}
    state = customer(order("o1", 5, at=NOW - 20 * DAY, data=line),
                     order("o2", 5, at=NOW - 5 * DAY, data=line))  # bought again later
    assert index.evaluate_all(state, NOW) == 0b11
    assert index.next_change(state, NOW) == NOW + 2 * DAY + 1  # coffee: 5 days old, 7-day window
    assert index.evaluate_all(state, NOW + 2 * DAY + 1) == 0b01
    assert index.evaluate_all(state, NOW + 25 * DAY + 1) == 0  # p-a last bought 5 days ago
    assert state.products_purchased == {"p-a"}  # the all-time set is not windowed


def test_subscriptions_started_in_the_window() -> None:
    index = index_of(cond("active_subscriptions", "includes_any", ["p-box"], within_days=14))
    started = customer(event("subscription.started",
                             {"subscription_id": "s1", "product_id": "p-box"},
                             at=NOW - 10 * DAY))
    assert index.evaluate_all(started, NOW) == 1
    assert index.next_change(started, NOW) == NOW + 4 * DAY + 1
    cancelled = customer(
        event("subscription.started", {"subscription_id": "s1", "product_id": "p-box"},
              at=NOW - 10 * DAY),
        event("subscription.cancelled", {"subscription_id": "s1", "product_id": "p-box"},
              at=NOW - DAY))
    assert index.evaluate_all(cancelled, NOW) == 0
    assert index.next_change(cancelled, NOW) is None


@pytest.mark.parametrize(("op", "before", "after"), [("after", 1, 0), ("before", 0, 1)])
def test_relative_before_and_after(op: str, before: int, after: int) -> None:
    index = index_of(cond("created_at", op, {"hours": 2}))
    state = customer(event("customer.created", {"email": "a@b.c"}, at=NOW - HOUR))
    at = index.next_change(state, NOW)
    assert at == NOW + HOUR + 1
    assert (index.evaluate_all(state, at - 1), index.evaluate_all(state, at)) == (before, after)


def test_the_horizon_is_the_longest_window() -> None:
    assert index_of(cond("order_count", "gte", 1, within_days=30),
                    cond("products_purchased", "exists", within_days=90)).horizon_ms == 90 * DAY
    assert index_of(cond("last_order_at", "within_last", {"days": 5})).horizon_ms == 0
    state = customer(order("o1", 5, at=NOW - 40 * DAY, data={"products": [{"product_id": "p"}]}),
                     order("o2", 5, at=NOW - 10 * DAY), horizon=30 * DAY)
    assert list(state.orders.times) == [NOW - 10 * DAY] and state.product_times == {}


def _index(specs: list[tuple[str, int, dict[str, Any]]]) -> SegmentIndex:
    return SegmentIndex(parse_definition(body, segment_id=seg_id, version=1, slot=slot)
                        for seg_id, slot, body in specs)


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_OFFSETS = st.lists(st.integers(0, 400 * DAY), min_size=1, max_size=6)


@PROPERTY
@given(specs=definition_sets(), stream=event_streams(), offsets=_OFFSETS)
def test_nothing_changes_before_the_next_change(
    specs: list[tuple[str, int, dict[str, Any]]], stream: list[tuple[Event, int]],
    offsets: list[int],
) -> None:
    """For every customer along the stream: between now and `next_change` every segment keeps
    its result; with no next change, none ever changes; the generated function agrees with
    the per-condition schedule."""
    index = _index(specs)
    states: dict[str, FeatureState] = {}
    for ev, now in stream:
        state = states.setdefault(ev.customer_id, new_state())
        if isinstance(ev, CustomerDeleted):
            continue
        apply_event(state, ev, now, index.horizon_ms)
        at = index.next_change(state, now)
        changes = index.time_changes(state, now)
        assert at == (changes[0].at_ms if changes else None)
        assert at is None or at > now
        mask = index.evaluate_all(state, now)
        for offset in offsets:
            later = now + offset if at is None else min(now + offset, at - 1)
            assert index.evaluate_all(state, later) == mask, (at, later)


@PROPERTY
@given(specs=definition_sets(), stream=event_streams())
def test_an_event_that_changes_no_time_field_keeps_the_timer(
    specs: list[tuple[str, int, dict[str, Any]]], stream: list[tuple[Event, int]],
) -> None:
    """The engine recomputes a customer's timer only when an event changed one of the index's
    `time_fields`: otherwise the timer it has must still be the right one."""
    index = _index(specs)
    states: dict[str, FeatureState] = {}
    for ev, now in stream:
        if isinstance(ev, CustomerDeleted):
            continue
        state = states.setdefault(ev.customer_id, new_state())
        before = index.next_change(state, now)
        changed = apply_event(state, ev, now, index.horizon_ms)
        if changed is not None and changed.isdisjoint(index.time_fields):
            assert index.next_change(state, now) == before, changed


def test_time_alone_re_evaluates_time_relative_segments_and_those_built_on_them() -> None:
    recent = segment([cond("last_order_at", "within_last", {"days": 1})], segment_id="r", slot=0)
    builds = segment([cond("segments", "includes_any", ["r"])], segment_id="b", slot=1)
    other = segment([cond("order_count", "gte", 1)], segment_id="o", slot=2)
    index = SegmentIndex([recent, builds, other])
    state = customer(order("o1", 5, at=NOW - 12 * HOUR))
    state.segments_mask = index.evaluate_all(state, NOW)
    assert state.segments_mask == 0b111
    assert index.evaluate(state, NOW + DAY, NO_CHANGE) == 0b100
