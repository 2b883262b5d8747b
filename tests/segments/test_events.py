"""Decoding input events: every type, every kind of bad input, and the codes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest
from msgspec import UNSET

from segments.events import (
    EVENT_TYPES,
    TOPIC_OF_TYPE,
    CustomerDeleted,
    CustomerUpdated,
    InvalidEvent,
    OrderChargeback,
    OrderDeclined,
    OrderPlaced,
    OrderRefunded,
    ProspectCreated,
    SubscriptionCancelled,
    SubscriptionStarted,
    decode_event,
    encode_event,
    event_type,
    occurred_ms,
)
from tests.segments.helpers import T0_MS, raw_event

ENVELOPE = {
    "event_id": "e-1",
    "type": "order.placed",
    "occurred_at": "2026-11-28T17:32:00Z",
    "customer_id": "c-1042",
    "data": {"order_id": "o-1", "total": 10},
}


def envelope(**changes: Any) -> bytes:
    body = {**ENVELOPE, **changes}
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


def problem(raw: bytes | str) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    return info.value


def test_every_type_decodes_to_its_class_and_topic() -> None:
    minimal = {
        "prospect.created": (ProspectCreated, {}),
        "customer.created": (ProspectCreated.__mro__[1], {}),
        "customer.updated": (CustomerUpdated, {"email": "a@b.c"}),
        "customer.deleted": (CustomerDeleted, {}),
        "order.placed": (OrderPlaced, {"order_id": "o", "total": 1}),
        "order.declined": (OrderDeclined, {"order_id": "o"}),
        "order.refunded": (OrderRefunded, {"order_id": "o", "amount": "1.5"}),
        "order.chargeback": (OrderChargeback, {"order_id": "o", "amount": 2}),
        "subscription.started": (SubscriptionStarted, {"subscription_id": "s", "product_id": "p"}),
        "subscription.cancelled": (SubscriptionCancelled,
                                   {"subscription_id": "s", "product_id": "p"}),
    }
    assert set(minimal) == set(EVENT_TYPES)
    for name, (cls, data) in minimal.items():
        ev = decode_event(raw_event(name, data))
        assert isinstance(ev, cls)
        assert event_type(ev) == name
    assert {t for t, topic in TOPIC_OF_TYPE.items() if topic == "customers"} == {
        "prospect.created", "customer.created", "customer.updated", "customer.deleted"}


def test_order_placed_carries_every_field() -> None:
    ev = decode_event(raw_event("order.placed", {
        "order_id": "o-1", "total": "129.90", "currency": "EUR",
        "products": [{"product_id": "p-1", "category": "shoes", "quantity": 2, "price": 64.95}],
        "campaign_id": "camp", "affiliate_id": "aff",
        "billing": {"country": "DE", "state": "BE", "city": "Berlin", "postal_code": "10115"},
        "shipping": {"country": "FR"},
    }))
    assert isinstance(ev, OrderPlaced)
    assert ev.data.total == Decimal("129.90")
    assert ev.data.products is not None and ev.data.products[0].price == Decimal("64.95")
    assert ev.data.billing is not None and ev.data.billing.city == "Berlin"
    assert ev.data.shipping is not None and ev.data.shipping.city is None


def test_profile_data_tells_absent_from_null() -> None:
    ev = decode_event(raw_event("customer.updated", {"email": None, "properties": {"a": 1}}))
    assert isinstance(ev, CustomerUpdated)
    assert ev.data.email is None
    assert ev.data.first_name is UNSET
    assert ev.data.properties == {"a": 1}


def test_unknown_extra_fields_are_ignored() -> None:
    ev = decode_event(envelope(extra=1, data={"order_id": "o", "total": 1, "gift": True}))
    assert isinstance(ev, OrderPlaced)
    assert not hasattr(ev.data, "gift")


def test_occurred_ms_is_exact_for_any_offset() -> None:
    ev = decode_event(envelope(occurred_at="2026-11-28T19:32:00.120+02:00"))
    assert occurred_ms(ev) == decode_event(envelope(occurred_at="2026-11-28T17:32:00.120Z")
                                           ).occurred_at.timestamp() * 1000
    assert occurred_ms(decode_event(raw_event("customer.deleted", at=T0_MS))) == T0_MS


def test_encode_decode_round_trip() -> None:
    raw = raw_event("order.placed", {"order_id": "o", "total": "0.1",
                                     "products": [{"price": 0.3}]})
    ev = decode_event(raw)
    assert decode_event(encode_event(ev)) == ev


@pytest.mark.parametrize("raw", [b"", b"{", b"\xff", envelope() + b" {}", "not json"])
def test_invalid_json(raw: bytes | str) -> None:
    err = problem(raw)
    assert err.code == "invalid_json"
    assert err.reason.startswith("not valid JSON")


def test_unknown_type_names_the_value_and_path() -> None:
    err = problem(envelope(type="order.shipped"))
    assert err.code == "unknown_type"
    assert "'order.shipped'" in err.reason and "`$.type`" in err.reason
    assert err.path == "$.type"


@pytest.mark.parametrize(("changes", "path"), [
    ({"event_id": ...}, "$.event_id"),
    ({"type": ...}, "$.type"),
    ({"occurred_at": ...}, "$.occurred_at"),
    ({"customer_id": ...}, "$.customer_id"),
    ({"data": ...}, "$.data"),
    ({"data": {"order_id": "o"}}, "$.data.total"),
    ({"data": {"total": 1}}, "$.data.order_id"),
    ({"type": "order.refunded", "data": {"order_id": "o"}}, "$.data.amount"),
    ({"type": "order.declined", "data": {}}, "$.data.order_id"),
    ({"type": "subscription.started", "data": {"product_id": "p"}}, "$.data.subscription_id"),
    ({"type": "subscription.cancelled", "data": {"subscription_id": "s"}}, "$.data.product_id"),
])
def test_missing_field(changes: dict[str, Any], path: str) -> None:
    err = problem(envelope(**changes))
    assert (err.code, err.path) == ("missing_field", path)
    assert f"`{path}`" in err.reason


@pytest.mark.parametrize(("changes", "path"), [
    ({"event_id": 5}, "$.event_id"),
    ({"type": 5}, "$.type"),
    ({"customer_id": None}, "$.customer_id"),
    ({"data": []}, "$.data"),
    ({"data": {"order_id": 1, "total": 1}}, "$.data.order_id"),
    ({"data": {"order_id": "o", "total": True}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": [1]}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": 1, "products": [{"quantity": "2"}]}},
     "$.data.products[0].quantity"),
    ({"type": "customer.updated", "data": {"tags": "vip"}}, "$.data.tags"),
    ({"type": "customer.updated", "data": {"properties": {"a": {"b": 1}}}},
     "$.data.properties[...]"),
])
def test_wrong_type(changes: dict[str, Any], path: str) -> None:
    err = problem(envelope(**changes))
    assert (err.code, err.path) == ("wrong_type", path)
    assert f"`{path}`" in err.reason


def test_whole_body_of_wrong_type() -> None:
    assert problem(b"[]").code == "wrong_type"
    assert problem(b'"event"').code == "wrong_type"


@pytest.mark.parametrize(("changes", "path"), [
    ({"occurred_at": "2026-11-28T17:32:00"}, "$.occurred_at"),
    ({"occurred_at": "yesterday"}, "$.occurred_at"),
    ({"event_id": ""}, "$.event_id"),
    ({"event_id": "x" * 129}, "$.event_id"),
    ({"customer_id": ""}, "$.customer_id"),
    ({"data": {"order_id": "", "total": 1}}, "$.data.order_id"),
    ({"data": {"order_id": "o", "total": "NaN"}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": "Infinity"}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": "12,50"}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": "-1"}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": "1e12"}}, "$.data.total"),
    ({"data": {"order_id": "o", "total": 1, "products": [{"price": "x"}]}},
     "$.data.products[0].price"),
    ({"data": {"order_id": "o", "total": 1, "products": [{"price": 1}, {"price": "-0.5"}]}},
     "$.data.products[1].price"),
    ({"data": {"order_id": "o", "total": 1, "products": [{}, {"price": "NaN"}]}},
     "$.data.products[1].price"),
    ({"type": "order.refunded", "data": {"order_id": "o", "amount": "nan"}}, "$.data.amount"),
])
def test_invalid_value(changes: dict[str, Any], path: str) -> None:
    err = problem(envelope(**changes))
    assert (err.code, err.path) == ("invalid_value", path)
    assert f"`{path}`" in err.reason


def test_number_too_large_for_json_floats() -> None:
    raw = envelope(data={"order_id": "o", "total": 1}).replace(b'"total":1', b'"total":1e400')
    err = problem(raw)
    assert (err.code, err.path) == ("invalid_value", "$.data.total")


def test_event_id_of_128_chars_is_fine() -> None:
    assert decode_event(envelope(event_id="x" * 128)).event_id == "x" * 128


def test_property_numbers_must_fit_64_bits() -> None:
    err = problem(raw_event("customer.updated", {"properties": {"big": 2**70}}))
    assert err.code == "invalid_value"
    assert "big" in err.reason


def test_invalid_event_is_permanent_and_readable() -> None:
    err = problem(envelope(data={"order_id": "o"}))
    assert err.retriable is False
    assert str(err) == "missing_field: missing required field `$.data.total`"
