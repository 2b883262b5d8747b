"""Hypothesis strategies: event streams and valid segment definitions over shared pools.

Events and conditions draw from the same small pools of values, so that
conditions are often true, often false and sometimes on a boundary.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import strategies as st

from segments.catalog import FIELDS, PROPERTY_FIELD, FieldSpec
from segments.events import Event, decode_event
from tests.segments.helpers import DAY, HOUR, T0_MS, iso

EMAILS = ["ann@example.com", "Bob@Example.org", "carl@test.io", "nobody"]
NAMES = ["Ann", "ann", "Émile", "Zoë"]
PLACES = ["US", "de", "Berlin", "austin", "TX", "10115"]
CAMPAIGNS = ["spring", "Spring", "fall"]
TAGS = ["vip", "beta", "VIP"]
PRODUCTS = ["p1", "p2", "p3"]
CATEGORIES = ["shoes", "hats"]
PROPERTY_NAMES = ["plan", "seats", "trial"]
PROPERTY_VALUES: list[Any] = ["gold", "silver", 1, 2.5, 3, 0, True, False]
ORDER_IDS = [f"o{i}" for i in range(6)]
SUBSCRIPTION_IDS = ["s1", "s2", "s3"]
AMOUNTS: list[Any] = [0, "9.99", 10, "25.50", 100, 0.1, "0.00005"]
MONEY_VALUES: list[Any] = [0, "9.99", 10, "25.5", 50, 100, -5, "0.0001"]
TEXT_VALUES = EMAILS + NAMES + PLACES + ["example.com", "EXAMPLE.COM"]
SUBSTRINGS = ["ex", "@", "COM", "an", "in", "é"]
WINDOWS = [1, 7, 30, 200, 366]

times = st.integers(-400 * 24, 30 * 24).map(lambda h: T0_MS + h * HOUR)
now_steps = st.sampled_from([0, 0, HOUR, DAY, 10 * DAY, 100 * DAY])


def _optional(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([*values, None])


addresses = st.fixed_dictionaries({}, optional={
    "country": _optional(PLACES), "state": _optional(PLACES),
    "city": _optional(PLACES), "postal_code": _optional(PLACES)})

profile_data = st.fixed_dictionaries({}, optional={
    "email": _optional(EMAILS),
    "first_name": _optional(NAMES),
    "last_name": _optional(NAMES),
    "phone": _optional(["+1 555", "0049"]),
    "billing": addresses | st.none(),
    "shipping": addresses | st.none(),
    "campaign_id": _optional(CAMPAIGNS),
    "affiliate_id": _optional(CAMPAIGNS),
    "tags": st.lists(st.sampled_from(TAGS), max_size=3) | st.none(),
    "properties": st.dictionaries(st.sampled_from(PROPERTY_NAMES),
                                  st.none() | st.sampled_from(PROPERTY_VALUES),
                                  max_size=3) | st.none(),
})

products = st.lists(st.fixed_dictionaries({}, optional={
    "product_id": st.sampled_from(PRODUCTS), "category": st.sampled_from(CATEGORIES),
    "quantity": st.integers(0, 3), "price": st.sampled_from(AMOUNTS)}), max_size=3)

order_data = st.fixed_dictionaries(
    {"order_id": st.sampled_from(ORDER_IDS), "total": st.sampled_from(AMOUNTS)},
    optional={"products": products, "campaign_id": st.sampled_from(CAMPAIGNS),
              "affiliate_id": st.sampled_from(CAMPAIGNS), "billing": addresses,
              "shipping": addresses, "currency": st.just("EUR")})
amount_data = st.fixed_dictionaries(
    {"order_id": st.sampled_from(ORDER_IDS), "amount": st.sampled_from(AMOUNTS)})
declined_data = st.fixed_dictionaries(
    {"order_id": st.sampled_from(ORDER_IDS)},
    optional={"total": st.sampled_from(AMOUNTS), "reason": st.just("card")})
subscription_data = st.fixed_dictionaries(
    {"subscription_id": st.sampled_from(SUBSCRIPTION_IDS),
     "product_id": st.sampled_from(PRODUCTS)})

profile_bodies = st.tuples(
    st.sampled_from(["prospect.created", "customer.created", "customer.updated"]), profile_data)
event_bodies = st.one_of(
    profile_bodies,
    profile_bodies,
    st.tuples(st.just("order.placed"), order_data),
    st.tuples(st.just("order.declined"), declined_data),
    st.tuples(st.sampled_from(["order.refunded", "order.chargeback"]), amount_data),
    st.tuples(st.sampled_from(["subscription.started", "subscription.cancelled"]),
              subscription_data),
)


@st.composite
def event_streams(draw: st.DrawFn, max_events: int = 24) -> list[tuple[Event, int]]:
    """(event, now_ms) pairs for three customers: now never goes back; times may;
    some events are exact replays of an earlier one (same event_id)."""
    count = draw(st.integers(1, max_events))
    now = T0_MS - draw(st.sampled_from([0, 10 * DAY]))
    stream: list[tuple[Event, int]] = []
    for i in range(count):
        now += draw(now_steps)
        if stream and draw(st.integers(0, 9)) == 0:
            stream.append((draw(st.sampled_from(stream))[0], now))
            continue
        kind, data = draw(event_bodies)
        raw = {"event_id": f"e{i}", "type": kind, "occurred_at": iso(draw(times)),
               "customer_id": draw(st.sampled_from(["c1", "c1", "c2", "c3"])), "data": data}
        stream.append((decode_event(msgspec.json.encode(raw)), now))
    return stream


# ---- definitions ------------------------------------------------------------

_MEMBERS = {
    "tags": TAGS,
    "products_purchased": PRODUCTS,
    "categories_purchased": CATEGORIES,
    "active_subscriptions": PRODUCTS,
    "cancelled_subscriptions": PRODUCTS,
}


_ORDER_FIELDS = frozenset({
    "contact_type", "order_count", "total_spent", "average_order_value", "last_order_total",
    "refunded_total", "decline_count", "refund_count", "chargeback_count", "first_order_at",
    "last_order_at", "products_purchased", "categories_purchased", "active_subscriptions",
})


def _scalars(spec: FieldSpec) -> list[Any]:
    return {
        "text": TEXT_VALUES,
        "id": CAMPAIGNS,
        "enum": ["prospect", "customer"],
        "count": [0, 1, 2, 3],
        "money": MONEY_VALUES,
        "property": PROPERTY_VALUES,
    }[spec.type]


def _numbers(spec: FieldSpec) -> list[Any]:
    return [0, 1, 2.5, 3] if spec.type == "property" else _scalars(spec)


def _value(draw: st.DrawFn, spec: FieldSpec, op: str, earlier: list[str]) -> Any:
    if op in ("eq", "neq"):
        return draw(st.sampled_from(_scalars(spec)))
    if op in ("in", "not_in"):
        return draw(st.lists(st.sampled_from(_scalars(spec)), min_size=1, max_size=3))
    if op in ("gt", "gte", "lt", "lte"):
        return draw(st.sampled_from(_numbers(spec)))
    if op == "between":
        pair = draw(st.lists(st.sampled_from(_numbers(spec)), min_size=2, max_size=2))
        return sorted(pair, key=_sort_key)
    if op in ("contains", "starts_with", "ends_with"):
        return draw(st.sampled_from(SUBSTRINGS))
    if op in ("exists", "not_exists"):
        return None
    if op in ("within_last", "not_within_last"):
        unit = draw(st.sampled_from(["days", "hours"]))
        return {unit: draw(st.sampled_from([1, 7, 30, 400] if unit == "days" else [1, 24, 100]))}
    if op in ("before", "after"):
        kind = draw(st.sampled_from(["moment", "date", "relative"]))
        if kind == "relative":
            unit = draw(st.sampled_from(["days", "hours"]))
            return {unit: draw(st.sampled_from([1, 7, 30] if unit == "days" else [1, 24, 100]))}
        return iso(draw(times)) if kind == "moment" else iso(draw(times))[:10]
    members = earlier if spec.type == "segments" else _MEMBERS[spec.name]
    return draw(st.lists(st.sampled_from(members), min_size=1, max_size=3))


def _sort_key(value: Any) -> float:
    return float(value)


@st.composite
def conditions(draw: st.DrawFn, earlier: list[str]) -> dict[str, Any]:
    """One valid condition; `segments` conditions refer only to `earlier` segment ids."""
    kind = draw(st.sampled_from(["any", "any", "orders", "property"]))
    fields = [f for f in FIELDS if f.type != "segments" or earlier]
    if kind == "orders":
        fields = [f for f in FIELDS if f.name in _ORDER_FIELDS]
    use_property = kind == "property"
    spec = PROPERTY_FIELD if use_property else draw(st.sampled_from(fields))
    name = f"properties.{draw(st.sampled_from(PROPERTY_NAMES))}" if use_property else spec.name
    op = draw(st.sampled_from(spec.operators))
    raw: dict[str, Any] = {"field": name, "op": op}
    value = _value(draw, spec, op, earlier)
    if value is not None:
        raw["value"] = value
    if spec.windowed and draw(st.booleans()):
        raw["within_days"] = draw(st.sampled_from(WINDOWS))
    return raw


@st.composite
def definition_bodies(draw: st.DrawFn, earlier: list[str]) -> dict[str, Any]:
    """A valid body: often a single condition (a segment re-evaluated for one field
    only catches a missed change), else 1-3 groups of 1-3 conditions."""
    if draw(st.booleans()):
        return {"name": "single", "groups": [{"conditions": [draw(conditions(earlier))]}]}
    groups = draw(st.lists(st.lists(conditions(earlier), min_size=1, max_size=3),
                           min_size=1, max_size=3))
    return {"name": "generated", "groups": [{"conditions": g} for g in groups]}


@st.composite
def definition_sets(draw: st.DrawFn) -> list[tuple[str, int, dict[str, Any]]]:
    """(id, slot, body) for 1-8 segments, later ones may build on earlier ones; slots
    are spread beyond 64 to exercise wide masks."""
    count = draw(st.integers(1, 8))
    slots = draw(st.lists(st.integers(0, 80), min_size=count, max_size=count, unique=True))
    found: list[tuple[str, int, dict[str, Any]]] = []
    for i, slot in enumerate(slots):
        body = draw(definition_bodies([seg_id for seg_id, _, _ in found]))
        found.append((f"seg{i}", slot, body))
    return found
