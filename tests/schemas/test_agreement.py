"""The JSON Schemas and `segments.events.decode_event` agree, sample by sample."""

from __future__ import annotations

from typing import Any

import pytest

from segments.events import EVENT_TYPES, TOPIC_OF_TYPE
from streams.schemas import SCHEMA_NAMES, all_schemas, generate, load_schema
from tests.schemas.helpers import (
    T0,
    decoder_accepts,
    event,
    per_type_accepts,
    raw_of,
    schema_accepts,
)

PROFILE_FULL = {
    "email": "a@example.com", "first_name": "Ann", "last_name": "Lee", "phone": "+1 555 0100",
    "billing": {"country": "US", "state": "TX", "city": "Austin", "postal_code": "73301"},
    "shipping": {"country": "DE", "state": None, "city": "Berlin", "postal_code": "10115"},
    "campaign_id": "spring", "affiliate_id": "aff-9", "tags": ["vip", "beta"],
    "properties": {"plan": "gold", "seats": 3, "ratio": 2.5, "trial": False, "gone": None},
}
ORDER_FULL = {
    "order_id": "o-1", "total": "129.90", "currency": "USD",
    "products": [{"product_id": "p-gold", "category": "shoes", "quantity": 2, "price": 64.95},
                 {"product_id": None}, {}],
    "campaign_id": "spring", "affiliate_id": None,
    "billing": {"country": "US"}, "shipping": None,
}
MINIMAL_DATA: dict[str, dict[str, Any]] = {
    "prospect.created": {},
    "customer.created": {},
    "customer.updated": {},
    "customer.deleted": {},
    "order.placed": {"order_id": "o-1", "total": 10},
    "order.declined": {"order_id": "o-1"},
    "order.refunded": {"order_id": "o-1", "amount": "5.00"},
    "order.chargeback": {"order_id": "o-1", "amount": 5},
    "subscription.started": {"subscription_id": "s-1", "product_id": "p-1"},
    "subscription.cancelled": {"subscription_id": "s-1", "product_id": "p-1"},
}
REQUIRED_DATA = {kind: sorted(data) for kind, data in MINIMAL_DATA.items()}
ENVELOPE_FIELDS = ("event_id", "type", "occurred_at", "customer_id", "data")


def _without(sample: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in sample.items() if k != key}


def _valid_samples() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for kind, data in MINIMAL_DATA.items():
        cases.append((f"{kind} minimal", event(kind, data)))
        cases.append((f"{kind} extra fields", {**event(kind, {**data, "zz": [1, {}]}),
                                               "trace": {"a": 1}}))
    for kind in ("prospect.created", "customer.created", "customer.updated"):
        cases.append((f"{kind} full", event(kind, PROFILE_FULL)))
        cases.append((f"{kind} nulls clear", event(kind, dict.fromkeys(PROFILE_FULL))))
    cases += [
        ("order.placed full", event("order.placed", ORDER_FULL)),
        ("order.placed optionals null", event("order.placed", {
            "order_id": "o", "total": 1, "currency": None, "products": None,
            "campaign_id": None, "billing": None})),
        ("order.declined full", event("order.declined",
                                      {"order_id": "o", "total": "5", "reason": "card"})),
        ("order.declined total null", event("order.declined", {"order_id": "o", "total": None})),
        ("customer.deleted any object", event("customer.deleted", {"why": "gdpr"})),
        ("negative quantity", event("order.placed", {
            "order_id": "o", "total": 1, "products": [{"quantity": -5}]})),
        ("huge quantity", raw_of(event("order.placed", {
            "order_id": "o", "total": 1, "products": [{"quantity": 2**70}]}))),
        ("property int64 max", event("customer.created", {"properties": {"n": 2**63 - 1}})),
        ("property int64 min", event("customer.created", {"properties": {"n": -(2**63)}})),
        ("property big float", b'{"event_id":"e","type":"customer.created","occurred_at":"'
         + T0.encode() + b'","customer_id":"c","data":{"properties":{"n":1e20}}}'),
        ("unicode ids", event("order.refunded", {"order_id": "ö", "amount": 1},
                              event_id="é", customer_id="😀")),
        ("event_id 128 chars", event("order.refunded", MINIMAL_DATA["order.refunded"],
                                     event_id="x" * 128)),
        ("event_id 128 astral chars", event("order.refunded", MINIMAL_DATA["order.refunded"],
                                            event_id="😀" * 128)),
        ("country not checked", event("customer.updated", {"billing": {"country": "usa"}})),
        ("currency not checked", event("order.placed", {"order_id": "o", "total": 1,
                                                        "currency": "dollars"})),
    ]
    for money in (0, 0.0, -0.0, 1, "1", "0", "0.00", "12.5", "0.00005", "100000000000",
                  "100000000000.000", "000000000000001.5", 100000000000, 99999999999.99,
                  "99999999999.9999999"):
        cases.append((f"money {money!r}", event("order.refunded",
                                                 {"order_id": "o", "amount": money})))
    for stamp in (T0, "2026-11-28T17:32:00.120Z", "2026-11-28T18:32:00+01:00",
                  "2026-11-28T12:02:00.5-05:30", "2026-11-28t17:32:00z",
                  "2026-11-28 17:32:00Z", "2024-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
                  "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.9999994+23:59",
                  "2026-11-28T17:32:00-00:00", "2026-11-28T17:32:00.1234567891234Z"):
        cases.append((f"occurred_at {stamp}", event("customer.deleted", {}, occurred_at=stamp)))
    return cases


def _invalid_samples() -> list[tuple[str, Any]]:
    cases: list[tuple[str, Any]] = []
    for kind, data in MINIMAL_DATA.items():
        base = event(kind, data)
        for name in ENVELOPE_FIELDS:
            cases.append((f"{kind} without {name}", _without(base, name)))
        for name in REQUIRED_DATA[kind]:
            cases.append((f"{kind} without data.{name}", event(kind, _without(data, name))))
            cases.append((f"{kind} data.{name} null", event(kind, {**data, name: None})))
            cases.append((f"{kind} data.{name} array", event(kind, {**data, name: []})))
        for wrong in (None, [], "x", 1, True):
            cases.append((f"{kind} data {wrong!r}", event(kind, wrong)))
        cases.append((f"{kind} naive occurred_at",
                      event(kind, data, occurred_at="2026-11-28T17:32:00")))
        cases.append((f"{kind} event_id too long", event(kind, data, event_id="x" * 129)))
        cases.append((f"{kind} event_id empty", event(kind, data, event_id="")))
        cases.append((f"{kind} customer_id empty", event(kind, data, customer_id="")))
        cases.append((f"{kind} customer_id number", event(kind, data, customer_id=1042)))
        cases.append((f"{kind} event_id number", event(kind, data, event_id=7)))
    for kind in ("order.placed", "order.declined", "order.refunded", "order.chargeback"):
        cases.append((f"{kind} order_id empty", event(kind, {**MINIMAL_DATA[kind],
                                                             "order_id": ""})))
    for kind in ("subscription.started", "subscription.cancelled"):
        for name in ("subscription_id", "product_id"):
            cases.append((f"{kind} {name} empty", event(kind, {**MINIMAL_DATA[kind], name: ""})))
    for money in ("-1", -1, -0.0001, "abc", "", "1.2.3", "1,5", "NaN", "Infinity", "inf",
                  "0x10", "100000000000.0001", 100000000000.001, True, None, [], {"v": 1},
                  "1e400"):
        cases.append((f"money {money!r}", event("order.refunded",
                                                {"order_id": "o", "amount": money})))
        if money is not None:  # a product's price may be null
            cases.append((f"price {money!r}", event("order.placed", {
                "order_id": "o", "total": 1, "products": [{"price": money}]})))
    cases += [
        ("money 1e400 literal", b'{"event_id":"e","type":"order.refunded","occurred_at":"'
         + T0.encode() + b'","customer_id":"c","data":{"order_id":"o","amount":1e400}}'),
        ("declined negative total", event("order.declined", {"order_id": "o", "total": -1})),
        ("profile field number", event("customer.created", {"email": 5})),
        ("profile billing string", event("customer.updated", {"billing": "US"})),
        ("address field number", event("customer.updated", {"billing": {"city": 5}})),
        ("order address list", event("order.placed", {"order_id": "o", "total": 1,
                                                      "shipping": []})),
        ("tags not a list", event("customer.created", {"tags": "vip"})),
        ("tags with number", event("customer.created", {"tags": ["vip", 1]})),
        ("tags with null", event("customer.created", {"tags": [None]})),
        ("properties list", event("customer.created", {"properties": [1]})),
        ("property nested object", event("customer.created", {"properties": {"a": {}}})),
        ("property list value", event("customer.created", {"properties": {"a": [1]}})),
        ("property empty name", event("customer.created", {"properties": {"": 1}})),
        ("property int64 max + 1", event("customer.created", {"properties": {"n": 2**63}})),
        ("property int64 min - 1", event("customer.created",
                                         {"properties": {"n": -(2**63) - 1}})),
        ("products not a list", event("order.placed", {"order_id": "o", "total": 1,
                                                       "products": {}})),
        ("product null", event("order.placed", {"order_id": "o", "total": 1,
                                                "products": [None]})),
        ("quantity float", b'{"event_id":"e","type":"order.placed","occurred_at":"'
         + T0.encode() + b'","customer_id":"c","data":{"order_id":"o","total":1,'
         b'"products":[{"quantity":2.0}]}}'),
        ("quantity string", event("order.placed", {"order_id": "o", "total": 1,
                                                   "products": [{"quantity": "2"}]})),
        ("quantity bool", event("order.placed", {"order_id": "o", "total": 1,
                                                 "products": [{"quantity": True}]})),
        ("currency number", event("order.placed", {"order_id": "o", "total": 1,
                                                   "currency": 840})),
        ("reason number", event("order.declined", {"order_id": "o", "reason": 5})),
        ("unknown type", event("order.shipped", {"order_id": "o"})),
        ("type in wrong case", event("Order.Placed", MINIMAL_DATA["order.placed"])),
        ("type number", event(5, {})),  # type: ignore[arg-type]
        ("type null", event(None, {})),  # type: ignore[arg-type]
        ("event_id 129 astral chars", event("customer.deleted", {}, event_id="😀" * 129)),
        ("root array", [event("customer.deleted", {})]),
        ("root string", "event"),
        ("root null", None),
        ("not JSON", b'{"event_id": '),
        ("NaN literal", b'{"event_id":"e","type":"order.refunded","occurred_at":"' + T0.encode()
         + b'","customer_id":"c","data":{"order_id":"o","amount":NaN}}'),
    ]
    for stamp in ("2026-11-28T17:32:00", "2026-11-28T17:32:00.5", "2026-11-28", "17:32:00Z",
                  "2026-11-28T17:32Z", "2026-11-28T17:32:00.Z", "2026-11-28T17:32:00+05",
                  "2026-11-28T17:32:00+24:00", "2026-11-28T17:32:00+00:60",
                  "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
                  "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
                  "2026-11-28T24:00:00Z", "2026-11-28T23:60:00Z", "2026-11-28T23:59:60Z",
                  "0000-01-01T00:00:00Z", "0000-02-29T00:00:00Z", "20261128T173200Z",
                  "2026-11-28T17:32:00,5Z", " 2026-11-28T17:32:00Z", "2026-11-28T17:32:00Z ",
                  "2026-11-28T17:32:00Z\n", "２026-11-28T17:32:00Z", "2026-11-28_17:32:00Z",
                  "2026-11-28T17:32:00+05:30:00", "9999-12-31T23:59:59.9999995Z",
                  "9999-12-31t23:59:59.99999999-01:00", "", 1764351120, None):
        cases.append((f"occurred_at {stamp!r}", event("customer.deleted", {},
                                                      occurred_at=stamp)))
    return cases


# The decoder accepts these; the schemas follow the contract and reject them: decimal
# strings beyond plain digits-and-fraction (Python's Decimal() syntax: exponents, signs,
# whitespace, underscores, non-ASCII digits) and ISO 8601 basic offsets (+hhmm), which
# are not RFC 3339.
DECODER_ONLY: list[tuple[str, Any]] = [
    *[(f"money string {s!r}", event("order.refunded", {"order_id": "o", "amount": s}))
      for s in ("1e5", "1E+5", "+1", ".5", "5.", " 1", "1 ", "1_000", "-0", "-0.00",
                "١٢", "１")],
    ("offset without colon +0530", event("customer.deleted", {},
                                         occurred_at="2026-11-28T17:32:00+0530")),
    ("offset without colon -0000", event("customer.deleted", {},
                                         occurred_at="2026-11-28T17:32:00-0000")),
]


@pytest.mark.parametrize(("name", "sample"), _valid_samples(), ids=lambda v: str(v)[:60])
def test_both_accept(name: str, sample: Any) -> None:
    raw = raw_of(sample)
    assert decoder_accepts(raw), name
    assert schema_accepts(raw), name
    assert per_type_accepts(raw) is True, name


@pytest.mark.parametrize(("name", "sample"), _invalid_samples(), ids=lambda v: str(v)[:60])
def test_both_reject(name: str, sample: Any) -> None:
    raw = raw_of(sample)
    assert not decoder_accepts(raw), name
    assert not schema_accepts(raw), name
    assert per_type_accepts(raw) in (False, None), name


@pytest.mark.parametrize(("name", "sample"), DECODER_ONLY, ids=lambda v: str(v)[:60])
def test_known_leniency_of_the_decoder(name: str, sample: Any) -> None:
    """If the decoder is tightened, this fails: move the sample to the invalid table."""
    raw = raw_of(sample)
    assert decoder_accepts(raw), name
    assert not schema_accepts(raw), name


def test_per_type_schema_rejects_other_types() -> None:
    sample = raw_of(event("order.refunded", MINIMAL_DATA["order.refunded"]))
    assert schema_accepts(sample, "order.refunded")
    assert not schema_accepts(sample, "order.chargeback")


def test_float_parsing_caveat() -> None:
    """JSON Schema numbers have no form: parsed as floats, `2.0` is an integer.

    The agreement tests parse floats as Decimal to keep the written form; a validator
    that parses floats (most do) accepts `"quantity": 2.0`, which the decoder rejects.
    """
    import json

    from tests.schemas.helpers import validator

    sample = event("order.placed", {"order_id": "o", "total": 1,
                                    "products": [{"quantity": 2.0}]})
    assert validator("event").is_valid(json.loads(json.dumps(sample)))
    assert not decoder_accepts(raw_of(sample))


def test_schema_types_match_the_decoder() -> None:
    assert generate.EVENT_TYPES == EVENT_TYPES
    assert generate.TOPIC_OF_TYPE == TOPIC_OF_TYPE
    assert generate.NAMES == SCHEMA_NAMES
    envelope = load_schema("event")
    assert envelope["properties"]["type"]["enum"] == list(EVENT_TYPES)
    assert len(envelope["oneOf"]) == len(EVENT_TYPES)


def test_committed_files_are_generated() -> None:
    assert all_schemas() == generate.build_schemas()
    assert generate.main(["--check"]) == 0, "run `python -m streams.schemas.generate`"
