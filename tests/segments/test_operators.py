"""Every operator on every field type, with missing values, boundaries, zones and decimals."""

from __future__ import annotations

from typing import Any

import pytest

from segments.evaluator import SegmentIndex
from segments.features import FeatureState, apply_event, new_state
from tests.segments.helpers import DAY, HOUR, T0_MS, cond, event, order, segment

NOW = T0_MS


def matches(state: FeatureState, raw: dict[str, Any], now: int = NOW) -> bool:
    index = SegmentIndex([segment([raw])])
    return index.evaluate_all(state, now) == 1


def person(**fields: Any) -> FeatureState:
    state = new_state()
    for name, value in fields.items():
        setattr(state, name, value)
    return state


EMPTY = new_state()
ANN = person(email="Ann@Example.COM", email_domain="example.com", first_name="Ann",
             billing_country="de", campaign_id="Spring")


@pytest.mark.parametrize(("raw", "ann", "empty"), [
    (cond("email", "eq", "ann@example.com"), True, False),
    (cond("email", "eq", "ANN@EXAMPLE.COM"), True, False),
    (cond("email", "neq", "ann@example.com"), False, True),
    (cond("email", "neq", "bob@example.com"), True, True),
    (cond("billing_country", "in", ["DE", "AT"]), True, False),
    (cond("billing_country", "not_in", ["DE"]), False, True),
    (cond("billing_country", "not_in", ["FR"]), True, True),
    (cond("email", "contains", "@EXAMPLE"), True, False),
    (cond("email", "starts_with", "ann@"), True, False),
    (cond("email", "ends_with", ".com"), True, False),
    (cond("email", "ends_with", "example"), False, False),
    (cond("first_name", "exists"), True, False),
    (cond("first_name", "not_exists"), False, True),
    (cond("campaign_id", "eq", "Spring"), True, False),
    (cond("campaign_id", "eq", "spring"), False, False),  # ids are exact
    (cond("campaign_id", "starts_with", "Spr"), True, False),
    (cond("campaign_id", "contains", "spr"), False, False),
    (cond("campaign_id", "neq", "spring"), True, True),
])
def test_text_and_id_fields(raw: dict[str, Any], ann: bool, empty: bool) -> None:
    assert (matches(ANN, raw), matches(EMPTY, raw)) == (ann, empty)


def test_contact_type_enum() -> None:
    customer = person(contact_type="customer")
    assert matches(customer, cond("contact_type", "eq", "customer"))
    assert matches(EMPTY, cond("contact_type", "eq", "prospect"))
    assert matches(EMPTY, cond("contact_type", "neq", "customer"))
    assert matches(customer, cond("contact_type", "in", ["prospect", "customer"]))
    assert not matches(customer, cond("contact_type", "not_in", ["customer"]))


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("eq", 3, True), ("eq", 2, False), ("neq", 3, False), ("neq", 0, True),
    ("gt", 2, True), ("gt", 3, False), ("gte", 3, True), ("gte", 4, False),
    ("lt", 4, True), ("lt", 3, False), ("lte", 3, True), ("lte", 2, False),
    ("between", [3, 3], True), ("between", [1, 3], True), ("between", [3, 9], True),
    ("between", [4, 9], False), ("in", [1, 3], True), ("not_in", [1, 3], False),
])
def test_count_comparisons_at_boundaries(op: str, value: Any, expected: bool) -> None:
    assert matches(person(order_count=3), cond("order_count", op, value)) is expected


def test_money_compares_exactly_in_decimals() -> None:
    state = person(total_spent=125_000, refunded_total=1)
    assert matches(state, cond("total_spent", "gte", "12.50"))
    assert matches(state, cond("total_spent", "gte", 12.5))
    assert not matches(state, cond("total_spent", "gt", "12.5"))
    assert matches(state, cond("total_spent", "lt", "12.5001"))
    assert matches(state, cond("total_spent", "between", ["12.4999", "12.5"]))
    assert matches(state, cond("refunded_total", "eq", "0.0001"))
    assert matches(person(total_spent=-5), cond("total_spent", "lt", 0))
    assert matches(EMPTY, cond("total_spent", "eq", 0))


def test_optional_money_is_missing_without_orders() -> None:
    assert not matches(EMPTY, cond("average_order_value", "gte", 0))
    assert not matches(EMPTY, cond("average_order_value", "lt", 1000))
    assert matches(EMPTY, cond("average_order_value", "neq", 10))
    assert matches(EMPTY, cond("average_order_value", "not_in", [10]))
    assert matches(EMPTY, cond("average_order_value", "not_exists"))
    assert matches(EMPTY, cond("last_order_total", "not_exists"))
    buyer = person(order_count=2, total_spent=250_001, last_order_total=0)
    assert matches(buyer, cond("average_order_value", "eq", "12.5"))  # 12.50005, half-even
    assert matches(buyer, cond("average_order_value", "exists"))
    assert matches(buyer, cond("last_order_total", "eq", 0))
    assert matches(buyer, cond("last_order_total", "exists"))


@pytest.mark.parametrize(("op", "value", "expected"), [
    ("before", "2026-11-28", False),
    ("before", "2026-11-29", True),
    ("after", "2026-11-28", True),
    ("after", "2026-11-28T12:00:00Z", True),  # after is inclusive ...
    ("before", "2026-11-28T12:00:00Z", False),  # ... before is strict
    ("before", "2026-11-28T12:00:00.001Z", True),
    ("after", "2026-11-28T13:00:00+02:00", True),  # 11:00 UTC
    ("after", "2026-11-28T13:00:00+00:30", False),  # 12:30 UTC
    ("within_last", {"days": 1}, True),
    ("within_last", {"hours": 1}, True),
    ("not_within_last", {"days": 1}, False),
])
def test_datetime_operators_at_the_order_time(op: str, value: Any, expected: bool) -> None:
    assert matches(person(last_order_at=T0_MS), cond("last_order_at", op, value)) is expected


def test_within_last_boundaries_move_with_now() -> None:
    state = person(last_order_at=T0_MS)
    within = cond("last_order_at", "within_last", {"days": 30})
    lapsed = cond("last_order_at", "not_within_last", {"days": 30})
    assert matches(state, within, T0_MS + 30 * DAY)  # exactly 30 days: still within
    assert not matches(state, within, T0_MS + 30 * DAY + 1)
    assert matches(state, lapsed, T0_MS + 30 * DAY + 1)
    assert not matches(state, lapsed, T0_MS + 30 * DAY)
    assert matches(state, cond("last_order_at", "within_last", {"hours": 2}), T0_MS + 2 * HOUR)
    assert matches(state, within, T0_MS - DAY)  # a future time counts as within


def test_datetime_operators_on_missing_values() -> None:
    for op, value in [("before", "2030-01-01"), ("after", "2000-01-01"),
                      ("within_last", {"days": 9}), ("not_within_last", {"days": 9}),
                      ("exists", None)]:
        assert not matches(EMPTY, cond("first_order_at", op, value)), op
    assert matches(EMPTY, cond("first_order_at", "not_exists"))


def test_set_operators() -> None:
    state = person(tags={"vip", "beta"})
    assert matches(state, cond("tags", "includes_any", ["vip", "x"]))
    assert not matches(state, cond("tags", "includes_any", ["VIP"]))  # set members are exact
    assert matches(state, cond("tags", "includes_all", ["vip", "beta"]))
    assert not matches(state, cond("tags", "includes_all", ["vip", "x"]))
    assert matches(state, cond("tags", "includes_none", ["x"]))
    assert not matches(state, cond("tags", "includes_none", ["beta"]))
    assert matches(state, cond("tags", "exists"))
    assert not matches(EMPTY, cond("tags", "exists"))
    assert matches(EMPTY, cond("tags", "not_exists"))
    assert matches(EMPTY, cond("active_subscriptions", "includes_none", ["p"]))
    assert not matches(EMPTY, cond("products_purchased", "includes_any", ["p"]))


@pytest.mark.parametrize(("raw", "expected"), [
    (cond("properties.plan", "eq", "gold"), True),
    (cond("properties.plan", "eq", "Gold"), False),  # properties compare exactly
    (cond("properties.plan", "neq", "gold"), False),
    (cond("properties.plan", "in", ["silver", "gold"]), True),
    (cond("properties.plan", "not_in", ["gold"]), False),
    (cond("properties.plan", "contains", "ol"), True),
    (cond("properties.plan", "starts_with", "go"), True),
    (cond("properties.plan", "ends_with", "ld"), True),
    (cond("properties.plan", "gt", 1), False),  # a text is not a number
    (cond("properties.seats", "eq", 3), True),
    (cond("properties.seats", "eq", 3.0), True),
    (cond("properties.seats", "eq", "3"), False),
    (cond("properties.seats", "gte", 2.5), True),
    (cond("properties.seats", "between", [3, 4]), True),
    (cond("properties.seats", "contains", "3"), False),
    (cond("properties.trial", "eq", True), True),
    (cond("properties.trial", "eq", 1), False),  # true is not 1
    (cond("properties.one", "eq", True), False),  # and 1 is not true
    (cond("properties.one", "in", [True, 1]), True),
    (cond("properties.trial", "gt", 0), False),
    (cond("properties.plan", "exists"), True),
    (cond("properties.nope", "exists"), False),
    (cond("properties.nope", "not_exists"), True),
    (cond("properties.nope", "eq", "x"), False),
    (cond("properties.nope", "neq", "x"), True),
    (cond("properties.nope", "not_in", ["x"]), True),
    (cond("properties.nope", "lt", 5), False),
])
def test_property_operators(raw: dict[str, Any], expected: bool) -> None:
    state = person(properties={"plan": "gold", "seats": 3, "trial": True, "one": 1})
    assert matches(state, raw) is expected


def windowed_state() -> FeatureState:
    state = new_state()
    for i, (age, total) in enumerate([(1, 10), (5, 20), (40, 40)]):
        apply_event(state, order(f"o-{i}", total, at=NOW - age * DAY), NOW)
    apply_event(state, event("order.refunded", {"order_id": "o-1", "amount": 5},
                             at=NOW - 2 * DAY), NOW)
    apply_event(state, event("order.chargeback", {"order_id": "o-2", "amount": 1},
                             at=NOW - 35 * DAY), NOW)
    apply_event(state, event("order.declined", {"order_id": "d"}, at=NOW - 3 * DAY), NOW)
    return state


@pytest.mark.parametrize(("raw", "expected"), [
    (cond("order_count", "eq", 3), True),
    (cond("order_count", "eq", 2, within_days=30), True),
    (cond("order_count", "eq", 1, within_days=1), True),  # exactly one day ago: inside
    (cond("order_count", "eq", 3, within_days=40), True),
    (cond("total_spent", "eq", 25, within_days=30), True),  # 10 + 20 - 5
    (cond("total_spent", "eq", 64), True),  # 70 - 5 - 1
    (cond("total_spent", "eq", 64, within_days=366), True),
    (cond("total_spent", "between", [24, 24], within_days=39), True),  # 30 - 5 - 1
    (cond("refund_count", "eq", 1, within_days=2), True),
    (cond("refund_count", "eq", 0, within_days=1), True),
    (cond("chargeback_count", "gte", 1, within_days=35), True),
    (cond("chargeback_count", "gte", 1, within_days=34), False),
    (cond("decline_count", "eq", 1, within_days=3), True),
    (cond("decline_count", "eq", 0, within_days=2), True),
])
def test_windowed_counts_and_sums(raw: dict[str, Any], expected: bool) -> None:
    assert matches(windowed_state(), raw) is expected


def test_windows_slide_with_now() -> None:
    state = windowed_state()
    recent = cond("order_count", "gte", 2, within_days=30)
    assert matches(state, recent, NOW)
    assert not matches(state, recent, NOW + 25 * DAY + 1)  # the 5-day-old order leaves


def test_segment_of_segment_operators() -> None:
    base_a = segment([cond("order_count", "gte", 1)], segment_id="a", slot=0)
    base_b = segment([cond("email", "exists")], segment_id="b", slot=1)
    tests = {
        "any": segment([cond("segments", "includes_any", ["a", "b"])], segment_id="any", slot=2),
        "all": segment([cond("segments", "includes_all", ["a", "b"])], segment_id="all", slot=3),
        "none": segment([cond("segments", "includes_none", ["a"])], segment_id="none", slot=4),
    }
    index = SegmentIndex([*tests.values(), base_b, base_a])  # any order: sorted topologically
    only_a = person(order_count=1)
    mask = index.evaluate_all(only_a, NOW)
    assert mask == 0b00101  # a, any
    both = person(order_count=1, email="x@y.z")
    assert index.evaluate_all(both, NOW) == 0b01111
    assert index.evaluate_all(EMPTY, NOW) == 0b10000
