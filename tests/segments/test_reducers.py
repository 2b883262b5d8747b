"""apply_event: every contract field, and the changed-field sets it reports."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segments.events import Event
from segments.features import (
    ANY_FIELD,
    EVERY_FIELD,
    MAX_SEEN_IDS,
    FeatureState,
    apply_event,
    average_order_value,
    decode_state,
    encode_state,
    feature_view,
    new_state,
    stable_hash,
)
from segments.timeline import HORIZON_MS
from tests.segments.helpers import DAY, T0_MS, event, order

NOW = T0_MS + DAY


def apply(state: FeatureState, ev: Event, now: int = NOW) -> frozenset[str]:
    changed = apply_event(state, ev, now)
    assert changed is not None
    return changed


def profile(event_type: str = "customer.updated", **data: Any) -> Event:
    at = data.pop("at", T0_MS)
    return event(event_type, data, at=at)


def test_new_state_is_an_empty_prospect() -> None:
    state = new_state()
    assert state.contact_type == "prospect"
    assert (state.order_count, state.total_spent, state.segments_mask) == (0, 0, 0)
    assert average_order_value(state) is None


def test_a_customers_first_event_changes_every_field() -> None:
    state = new_state()
    assert apply(state, event("order.declined", {"order_id": "o"})) == EVERY_FIELD
    assert ANY_FIELD in EVERY_FIELD and "properties.x" not in EVERY_FIELD
    assert apply(state, event("order.declined", {"order_id": "o"})) == {"decline_count"}


def test_repeated_event_id_changes_nothing() -> None:
    state = new_state()
    ev = order("o-1", 10, event_id="same")
    assert apply(state, ev)
    before = encode_state(state)
    assert apply_event(state, ev, NOW) is None
    assert apply_event(state, order("o-2", 99, event_id="same"), NOW) is None
    assert encode_state(state) == before


def test_seen_ids_are_bounded_and_keep_the_most_recent_half() -> None:
    state = new_state()
    for i in range(MAX_SEEN_IDS * 2 + 10):
        apply(state, profile(first_name=str(i)))
    remembered = len(state.seen_recent) + len(state.seen_older)
    assert MAX_SEEN_IDS // 2 <= remembered <= MAX_SEEN_IDS


def test_stable_hash_is_stable() -> None:
    assert stable_hash("o-1") == stable_hash("o-1") != stable_hash("o-2")
    assert stable_hash("abc") == 0x5995D533D814BBD8  # blake2b-64, the same in every process


@given(st.text())
def test_stable_hash_is_the_stored_format(text: str) -> None:
    """Stored order and event hashes were written with this formula: it may never change."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    assert stable_hash(text) == int.from_bytes(digest, "little", signed=True)


def test_customer_deleted_is_not_applied_here() -> None:
    with pytest.raises(ValueError, match="erase"):
        apply_event(new_state(), event("customer.deleted"), NOW)


# ---- orders ---------------------------------------------------------------


def test_first_order_makes_a_customer() -> None:
    state = new_state()
    changed = apply(state, order("o-1", "20.50", at=T0_MS))
    assert state.contact_type == "customer"
    assert (state.order_count, state.total_spent) == (1, 205_000)
    assert (state.first_order_at, state.last_order_at, state.last_order_total) == (
        T0_MS, T0_MS, 205_000)
    assert average_order_value(state) == 205_000
    assert changed >= {"contact_type", "order_count", "total_spent", "average_order_value",
                       "first_order_at", "last_order_at", "last_order_total", "created_at"}
    assert apply(state, order("o-2", 1)) >= {"order_count"}
    assert "contact_type" not in apply(state, order("o-3", 1))


def test_a_repeated_order_id_counts_once() -> None:
    state = new_state()
    apply(state, order("o-1", 10))
    assert apply(state, order("o-1", 10)) == frozenset()
    assert (state.order_count, state.total_spent) == (1, 100_000)


def test_declined_orders_are_not_orders() -> None:
    state = new_state()
    apply(state, profile(first_name="A", at=T0_MS - DAY))
    changed = apply(state, event("order.declined", {"order_id": "o", "total": 5}))
    assert changed == {"decline_count"}
    assert (state.decline_count, state.order_count, state.contact_type) == (1, 0, "prospect")
    apply(state, event("order.declined", {"order_id": "o", "reason": "card"}))
    assert state.decline_count == 2


def test_out_of_order_orders_keep_first_last_and_latest_total() -> None:
    state = new_state()
    apply(state, order("b", 20, at=T0_MS))
    changed = apply(state, order("a", 10, at=T0_MS - DAY))
    assert (state.first_order_at, state.last_order_at, state.last_order_total) == (
        T0_MS - DAY, T0_MS, 200_000)
    assert "last_order_at" not in changed and "first_order_at" in changed
    apply(state, order("c", 30, at=T0_MS + 1))
    assert (state.last_order_at, state.last_order_total) == (T0_MS + 1, 300_000)


def test_refunds_and_chargebacks_net_out_of_total_spent() -> None:
    state = new_state()
    apply(state, order("o-1", 100))
    apply(state, order("o-2", 50))
    changed = apply(state, event("order.refunded", {"order_id": "o-1", "amount": "30.5"}))
    assert changed == {"refund_count", "refunded_total", "total_spent", "average_order_value"}
    apply(state, event("order.chargeback", {"order_id": "o-2", "amount": 50}))
    assert state.total_spent == 1_500_000 - 305_000 - 500_000
    assert state.refunded_total == 805_000
    assert (state.refund_count, state.chargeback_count) == (1, 1)
    assert average_order_value(state) == (1_500_000 - 805_000) // 2
    assert state.order_count == 2  # refunds do not uncount orders


def test_zero_refund_counts_but_changes_no_amount() -> None:
    state = new_state()
    apply(state, order("o", 10))
    assert apply(state, event("order.refunded", {"order_id": "o", "amount": 0})) == {
        "refund_count"}


def test_refunds_change_no_product_or_category_set() -> None:
    state = new_state()
    apply(state, order("o", 10, data={"products": [
        {"product_id": "p-1", "category": "shoes"}, {"product_id": "p-2"}, {"category": "x"}]}))
    assert state.products_purchased == {"p-1", "p-2"}
    assert state.categories_purchased == {"shoes", "x"}
    changed = apply(state, event("order.refunded", {"order_id": "o", "amount": 10}))
    assert "products_purchased" not in changed
    assert state.products_purchased == {"p-1", "p-2"}


def test_product_sets_report_only_growth() -> None:
    state = new_state()
    apply(state, order("o-1", 1, data={"products": [{"product_id": "p", "category": "c"}]}))
    changed = apply(state, order("o-2", 1, data={"products": [{"product_id": "p"}]}))
    assert "products_purchased" not in changed and "categories_purchased" not in changed


def test_average_order_value_rounds_half_to_even() -> None:
    state = new_state()
    for i, total in enumerate(("0.0001", "0.0002", "0")):
        apply(state, order(f"o-{i}", total))
    assert average_order_value(state) == 1  # 3 units / 3


# ---- subscriptions --------------------------------------------------------


def sub(kind: str, sub_id: str, product: str, at: int = T0_MS) -> Event:
    return event(f"subscription.{kind}", {"subscription_id": sub_id, "product_id": product},
                 at=at)


def test_subscriptions_active_and_cancelled() -> None:
    state = new_state()
    assert apply(state, sub("started", "s1", "p")) >= {"active_subscriptions"}
    apply(state, sub("started", "s2", "q"))
    assert state.active_subscriptions == {"p", "q"}
    changed = apply(state, sub("cancelled", "s1", "p", T0_MS + 1))
    assert changed >= {"active_subscriptions", "cancelled_subscriptions"}
    assert (state.active_subscriptions, state.cancelled_subscriptions) == ({"q"}, {"p"})


def test_a_late_older_subscription_event_loses() -> None:
    state = new_state()
    apply(state, sub("cancelled", "s1", "p", T0_MS + 10))
    apply(state, sub("started", "s1", "p", T0_MS))
    assert (state.active_subscriptions, state.cancelled_subscriptions) == (set(), {"p"})


def test_two_subscriptions_to_one_product() -> None:
    state = new_state()
    apply(state, sub("started", "s1", "p"))
    apply(state, sub("started", "s2", "p"))
    apply(state, sub("cancelled", "s1", "p", T0_MS + 1))
    assert (state.active_subscriptions, state.cancelled_subscriptions) == ({"p"}, {"p"})


# ---- profile --------------------------------------------------------------


def test_profile_fields_and_email_domain() -> None:
    state = new_state()
    changed = apply(state, profile("prospect.created", email="Ann@Example.COM",
                                   first_name="Ann", last_name="Lee", phone="+1 555"))
    assert changed >= {"email", "email_domain", "first_name", "last_name", "phone"}
    assert state.email_domain == "example.com"
    assert state.contact_type == "prospect"
    changed = apply(state, profile(email="ann@example.com"))
    assert changed == {"email"}  # same domain


def test_update_keeps_absent_and_clears_null() -> None:
    state = new_state()
    apply(state, profile("customer.created", email="a@b.c", first_name="A", tags=["x"]))
    changed = apply(state, profile(first_name=None))
    assert changed == {"first_name"}
    assert (state.email, state.first_name, state.tags) == ("a@b.c", None, {"x"})
    apply(state, profile(email=None))
    assert state.email_domain is None


def test_email_without_at_has_no_domain() -> None:
    state = new_state()
    apply(state, profile(email="nobody"))
    assert state.email_domain is None


def test_tags_are_replaced_as_a_set() -> None:
    state = new_state()
    apply(state, profile(tags=["a", "b", "a"]))
    assert state.tags == {"a", "b"}
    assert apply(state, profile(tags=["b", "a"])) == frozenset()
    assert apply(state, profile(tags=None)) == {"tags"}
    assert state.tags == set()


def test_properties_merge_and_report_each_name() -> None:
    state = new_state()
    apply(state, profile(first_name="A"))
    assert apply(state, profile(properties={"plan": "gold", "seats": 3})) == {
        "properties.plan", "properties.seats"}
    assert apply(state, profile(properties={"plan": "gold", "seats": None, "x": True})) == {
        "properties.seats", "properties.x"}
    assert state.properties == {"plan": "gold", "x": True}
    assert apply(state, profile(properties={"x": 1})) == {"properties.x"}  # true -> 1
    assert apply(state, profile(properties=None)) == {"properties.plan", "properties.x"}
    assert state.properties == {}


def test_profile_address_merges_field_by_field() -> None:
    state = new_state()
    apply(state, profile(billing={"country": "US", "city": "Austin"}))
    changed = apply(state, profile(billing={"city": "Dallas", "state": "TX"}))
    assert changed == {"billing_city", "billing_state"}
    assert (state.billing_country, state.billing_state, state.billing_city) == (
        "US", "TX", "Dallas")
    apply(state, profile(shipping={"postal_code": "75001"}))
    assert state.shipping_postal_code == "75001"


def test_order_address_fills_in_until_the_profile_has_one() -> None:
    state = new_state()
    addr = {"country": "DE", "city": "Berlin"}
    changed = apply(state, order("o-1", 1, data={"billing": addr, "shipping": addr}))
    assert {"billing_country", "billing_city", "shipping_country"} <= changed
    apply(state, order("o-0", 1, at=T0_MS - DAY, data={"billing": {"country": "FR"}}))
    assert state.billing_country == "DE"  # an older order does not win
    apply(state, profile(billing={"country": "AT"}))
    assert (state.billing_country, state.billing_city) == ("AT", None)
    apply(state, order("o-2", 1, at=T0_MS + 1, data={"billing": {"country": "PL"}}))
    assert state.billing_country == "AT"  # the profile wins over later orders
    apply(state, profile(billing=None))
    assert state.billing_country == "PL"  # back to the latest order's address


def test_attribution_latest_occurred_at_wins_across_topics() -> None:
    state = new_state()
    apply(state, order("o", 1, at=T0_MS, data={"campaign_id": "spring"}))
    apply(state, profile(campaign_id="winter", affiliate_id="aff", at=T0_MS - DAY))
    assert (state.campaign_id, state.affiliate_id) == ("spring", "aff")
    apply(state, profile(campaign_id=None, at=T0_MS + 1))
    assert state.campaign_id is None


def test_created_at_prefers_created_events_then_earliest_event() -> None:
    state = new_state()
    apply(state, order("o", 1, at=T0_MS))
    assert state.created_at == T0_MS
    apply(state, profile(first_name="x", at=T0_MS - DAY))
    assert state.created_at == T0_MS - DAY
    changed = apply(state, profile("customer.created", at=T0_MS + DAY))
    assert state.created_at == T0_MS + DAY and "created_at" in changed
    apply(state, profile("prospect.created", at=T0_MS))
    assert state.created_at == T0_MS
    apply(state, profile(first_name="y", at=T0_MS - 5 * DAY))
    assert state.created_at == T0_MS


# ---- windows, codec, view --------------------------------------------------


def test_window_timelines_follow_events() -> None:
    state = new_state()
    apply(state, order("o", 10, at=NOW - 3 * DAY))
    apply(state, order("old", 10, at=NOW - HORIZON_MS - 1))
    apply(state, event("order.declined", {"order_id": "d"}, at=NOW - DAY))
    apply(state, event("order.refunded", {"order_id": "o", "amount": 1}, at=NOW - DAY))
    apply(state, event("order.chargeback", {"order_id": "o", "amount": 2}, at=NOW - DAY))
    assert list(state.orders.times) == [NOW - 3 * DAY]
    assert state.order_count == 2
    assert [len(t.times) for t in (state.declines, state.refunds, state.chargebacks)] == [1, 1, 1]


def test_state_codec_round_trip_with_a_wide_mask() -> None:
    state = new_state()
    apply(state, order("o", "9.99", data={"products": [{"product_id": "p"}]}))
    apply(state, profile(properties={"a": 1.5, "b": "x", "c": False}, tags=["t"]))
    apply(state, sub("started", "s", "p"))
    state.segments_mask = (1 << 1000) | 5
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(new_state())) == new_state()


def test_feature_view_is_json_ready() -> None:
    state = new_state()
    apply(state, order("o", "12.5", at=T0_MS))
    state.segments_mask = 0b101
    view = feature_view(state, NOW, {0: "a", 2: "b"})
    assert view["total_spent"] == 12.5 and view["average_order_value"] == 12.5
    assert view["last_order_at"] == "2026-11-28T12:00:00.000Z"
    assert view["segments"] == ["a", "b"]
    assert feature_view(state, NOW)["segments"] == [0, 2]
    assert view["created_at"] == "2026-11-28T12:00:00.000Z"
    assert view["tags"] == [] and view["properties"] == {}
