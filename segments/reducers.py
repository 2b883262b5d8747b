"""`apply_event`: fold one input event into a `FeatureState`, report what changed.

Pure and synchronous: `(state, event, now_ms, horizon_ms) -> changed field names`,
mutating the state in place for speed. Each event class has one reducer, found
through a dict. The changed set holds contract field names (`"properties.<name>"`
for custom properties) whose value differs afterwards; a change of a `within_days`
window counts as a change of its base field. Time only enters as epoch ms,
converted once per event. History for windows (timelines, purchase times) is kept
for `horizon_ms` before now (see `segments.timeline`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final, NamedTuple

from msgspec import UNSET, UnsetType

from segments import timeline
from segments.catalog import EVERY_FIELD
from segments.events import (
    Address,
    AmountData,
    CustomerCreated,
    CustomerUpdated,
    Event,
    OrderChargeback,
    OrderDeclined,
    OrderDeclinedData,
    OrderPlaced,
    OrderPlacedData,
    OrderRefunded,
    ProfileAddress,
    ProfileData,
    ProspectCreated,
    SubscriptionCancelled,
    SubscriptionData,
    SubscriptionStarted,
    occurred_ms,
)
from segments.money import divide_half_even, money_from_decimal
from segments.state import (
    AddressTuple,
    FeatureState,
    PropertyValue,
    remember_event,
    sorted_insert,
    stable_hash,
)

Changed = set[str]

_shared: Final[Callable[[str], str]] = sys.intern
"""Values with few distinct texts (products, categories, tags, places, campaigns) are stored as
one shared string each. Every event decodes new string objects; kept as they are, each state
points at strings scattered over the heap, and comparing, hashing and encoding them misses the
CPU cache. Shared, they stay cached, and set lookups match by identity (docs/design.md, "Memory
locality is most of the per-event cost")."""
_Reducer = Callable[[FeatureState, Any, int, int, Changed], None]

_PROFILE_TEXT: Final = ("email", "first_name", "last_name", "phone")
_ADDRESS_PARTS: Final = ("country", "state", "city", "postal_code")
_NO_ADDRESS: Final[AddressTuple] = (None, None, None, None)
_ATTRIBUTION_STAMPS: Final = {"campaign_id": "campaign_at", "affiliate_id": "affiliate_at"}


def apply_event(
    state: FeatureState, ev: Event, now_ms: int, horizon_ms: int = timeline.HORIZON_MS
) -> frozenset[str] | None:
    """Apply `ev` to `state`; the changed contract fields, or None for a repeated event_id.

    On a customer's first event the answer is `EVERY_FIELD` (which holds "*"), so
    segments matching missing values (`not_exists`, `neq`, ...) are evaluated too.

    `customer.deleted` is not a state change but an erasure, done by the caller:
    passing one raises ValueError.
    """
    reducer = _REDUCERS.get(type(ev))
    if reducer is None:
        raise ValueError(f"{type(ev).__name__} is not applied to a state; erase the state")
    if not remember_event(state, ev.event_id):
        return None
    at_ms = occurred_ms(ev)
    first = state.created_at is None  # every applied event sets created_at
    changed: Changed = set()
    _note_created_at(state, at_ms, type(ev) in _CREATED_EVENTS, changed)
    reducer(state, ev.data, at_ms, now_ms - horizon_ms, changed)
    # A new customer's every field (missing ones too) is new: all segments must look.
    return EVERY_FIELD if first else frozenset(changed)


def _assign(state: FeatureState, name: str, value: object, changed: Changed) -> None:
    """Set a field and record its name when the value differs."""
    if getattr(state, name) != value:
        setattr(state, name, value)
        changed.add(name)


def _note_created_at(state: FeatureState, at_ms: int, from_profile: bool, changed: Changed) -> None:
    """created_at: earliest created event; until there is one, the earliest event."""
    current = state.created_at
    if from_profile and not state.created_from_profile:
        state.created_from_profile = True
    elif from_profile != state.created_from_profile or (current is not None and at_ms >= current):
        return
    if current != at_ms:
        state.created_at = at_ms
        changed.add("created_at")


# ---- profile events -------------------------------------------------------


def _apply_profile(
    state: FeatureState, data: ProfileData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    for name in _PROFILE_TEXT:
        value = getattr(data, name)
        if value is not UNSET:
            _assign(state, name, value, changed)
    if "email" in changed:
        _assign(state, "email_domain", _email_domain(state.email), changed)
    _merge_profile_address(state, _BILLING, data.billing, changed)
    _merge_profile_address(state, _SHIPPING, data.shipping, changed)
    _set_attribution(state, "campaign_id", data.campaign_id, at_ms, changed)
    _set_attribution(state, "affiliate_id", data.affiliate_id, at_ms, changed)
    if data.tags is not UNSET:
        _assign(state, "tags", {_shared(tag) for tag in data.tags or ()}, changed)
    if data.properties is not UNSET:
        _merge_properties(state, data.properties, changed)


def _email_domain(email: str | None) -> str | None:
    if email is None or "@" not in email:
        return None
    return _shared(email.rpartition("@")[2].strip().lower()) or None


class _AddressSlots(NamedTuple):
    """Names of the state fields behind one address kind ("billing" or "shipping")."""

    fields: tuple[str, str, str, str]
    read: Callable[[FeatureState], AddressTuple]
    from_profile: str
    from_order: str
    order_at: str


def _slots(kind: str) -> _AddressSlots:
    country, st, city, postal = (f"{kind}_{part}" for part in _ADDRESS_PARTS)
    return _AddressSlots((country, st, city, postal), attrgetter(country, st, city, postal),
                         f"{kind}_from_profile", f"order_{kind}", f"order_{kind}_at")


_BILLING: Final = _slots("billing")
_SHIPPING: Final = _slots("shipping")


def _merge_profile_address(
    state: FeatureState,
    slots: _AddressSlots,
    patch: ProfileAddress | UnsetType | None,
    changed: Changed,
) -> None:
    """A profile address overrides any order address; null hands back to orders."""
    if patch is UNSET:
        return
    merged = _NO_ADDRESS
    if patch is not None:
        old = slots.read(state) if getattr(state, slots.from_profile) else _NO_ADDRESS
        merged = _patched(old, patch)
    from_profile = merged != _NO_ADDRESS
    setattr(state, slots.from_profile, from_profile)
    fallback = getattr(state, slots.from_order) or _NO_ADDRESS
    _write_address(state, slots, merged if from_profile else fallback, changed)


def _patched(old: AddressTuple, patch: ProfileAddress) -> AddressTuple:
    country, st, city, postal = old
    n_country, n_state, n_city, n_postal = (
        patch.country, patch.state, patch.city, patch.postal_code)
    return (country if n_country is UNSET else n_country and _shared(n_country),
            st if n_state is UNSET else n_state and _shared(n_state),
            city if n_city is UNSET else n_city and _shared(n_city),
            postal if n_postal is UNSET else n_postal)


def _write_address(
    state: FeatureState, slots: _AddressSlots, value: AddressTuple, changed: Changed
) -> None:
    if slots.read(state) == value:
        return
    for name, part_value in zip(slots.fields, value, strict=True):
        _assign(state, name, part_value, changed)


def _set_attribution(
    state: FeatureState, name: str, value: str | UnsetType | None, at_ms: int, changed: Changed
) -> None:
    """campaign_id / affiliate_id: written by profiles and orders, latest occurred_at wins."""
    if value is UNSET:
        return
    stamp_name = _ATTRIBUTION_STAMPS[name]
    stamp: int | None = getattr(state, stamp_name)
    if stamp is None or at_ms >= stamp:
        setattr(state, stamp_name, at_ms)
        _assign(state, name, value and _shared(value), changed)


def _merge_properties(
    state: FeatureState, patch: dict[str, PropertyValue | None] | None, changed: Changed
) -> None:
    """Merge-patch: a key set to null is removed, `properties: null` removes all."""
    props = state.properties
    if patch is None:
        changed.update(f"properties.{name}" for name in props)
        props.clear()
        return
    for name, value in patch.items():
        old = props.get(name)
        if value is None:
            if name in props:
                del props[name]
                changed.add(f"properties.{name}")
        elif old is None or type(old) is not type(value) or old != value:
            props[_shared(name)] = value
            changed.add(f"properties.{name}")


# ---- orders ---------------------------------------------------------------


def _apply_order_placed(
    state: FeatureState, data: OrderPlacedData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    if not sorted_insert(state.order_ids, stable_hash(data.order_id)):
        return  # the same order announced twice: counted once
    total = money_from_decimal(data.total)
    _count_order(state, total, at_ms, keep_from, changed)
    _note_order_times(state, total, at_ms, changed)
    _note_products(state, data, at_ms, keep_from, changed)
    if data.campaign_id:
        _set_attribution(state, "campaign_id", data.campaign_id, at_ms, changed)
    if data.affiliate_id:
        _set_attribution(state, "affiliate_id", data.affiliate_id, at_ms, changed)
    if data.billing is not None:
        _note_order_address(state, _BILLING, data.billing, at_ms, changed)
    if data.shipping is not None:
        _note_order_address(state, _SHIPPING, data.shipping, at_ms, changed)


def _count_order(
    state: FeatureState, total: int, at_ms: int, keep_from: int, changed: Changed
) -> None:
    count, spent = state.order_count, state.total_spent
    state.order_count = count + 1
    state.total_spent = spent + total
    changed.add("order_count")
    if total:
        changed.add("total_spent")
    if not count or divide_half_even(spent, count) != divide_half_even(spent + total, count + 1):
        changed.add("average_order_value")
    timeline.insert(state.orders, at_ms, total, keep_from)
    if state.contact_type != "customer":
        state.contact_type = "customer"
        changed.add("contact_type")


def _note_order_times(state: FeatureState, total: int, at_ms: int, changed: Changed) -> None:
    first, last = state.first_order_at, state.last_order_at
    if first is None or at_ms < first:
        state.first_order_at = at_ms
        changed.add("first_order_at")
    if last is None or at_ms > last:
        state.last_order_at = at_ms
        changed.add("last_order_at")
    if (last is None or at_ms >= last) and state.last_order_total != total:
        state.last_order_total = total  # ties: the order applied last wins
        changed.add("last_order_total")


def _note_products(
    state: FeatureState, data: OrderPlacedData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    """The sets of products and categories ever bought, and within the horizon the time each
    was last bought (for windowed conditions: a newer purchase changes the window)."""
    products, categories = state.products_purchased, state.categories_purchased
    product_times, category_times = state.product_times, state.category_times
    sizes = len(products), len(categories)
    moved_product = moved_category = False
    for line in data.products or ():
        if line.product_id is not None:
            product = _shared(line.product_id)
            products.add(product)
            moved_product |= _note_time(product_times, product, at_ms, keep_from)
        if line.category is not None:
            category = _shared(line.category)
            categories.add(category)
            moved_category |= _note_time(category_times, category, at_ms, keep_from)
    if moved_product:
        _prune_times(product_times, keep_from)
    if moved_category:
        _prune_times(category_times, keep_from)
    if moved_product or len(products) != sizes[0]:
        changed.add("products_purchased")
    if moved_category or len(categories) != sizes[1]:
        changed.add("categories_purchased")


def _note_time(times: dict[str, int], key: str, at_ms: int, keep_from: int) -> bool:
    """Keep `at_ms` as `key`'s latest time if it is newer and within the horizon."""
    if at_ms < keep_from or at_ms <= times.get(key, keep_from - 1):
        return False
    times[key] = at_ms
    return True


def _prune_times(times: dict[str, int], keep_from: int) -> None:
    for key in [k for k, at in times.items() if at < keep_from]:
        del times[key]


def _note_order_address(
    state: FeatureState,
    slots: _AddressSlots,
    address: Address,
    at_ms: int,
    changed: Changed,
) -> None:
    """Keep the address of the latest order; it shows while the profile has none."""
    stamp = getattr(state, slots.order_at)
    if stamp is not None and at_ms < stamp:
        return
    country, st, city = address.country, address.state, address.city
    value = (country and _shared(country), st and _shared(st), city and _shared(city),
             address.postal_code)
    setattr(state, slots.from_order, value)
    setattr(state, slots.order_at, at_ms)
    if not getattr(state, slots.from_profile):
        _write_address(state, slots, value, changed)


def _apply_declined(
    state: FeatureState, data: OrderDeclinedData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    state.decline_count += 1
    changed.add("decline_count")
    amount = 0 if data.total is None else money_from_decimal(data.total)
    timeline.insert(state.declines, at_ms, amount, keep_from)


def _apply_refund(
    state: FeatureState, data: AmountData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    state.refund_count += 1
    changed.add("refund_count")
    amount = money_from_decimal(data.amount)
    timeline.insert(state.refunds, at_ms, amount, keep_from)
    _subtract(state, amount, changed)


def _apply_chargeback(
    state: FeatureState, data: AmountData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    state.chargeback_count += 1
    changed.add("chargeback_count")
    amount = money_from_decimal(data.amount)
    timeline.insert(state.chargebacks, at_ms, amount, keep_from)
    _subtract(state, amount, changed)


def _subtract(state: FeatureState, amount: int, changed: Changed) -> None:
    """Refunds and chargebacks: net them out of total_spent, sum them in refunded_total."""
    if not amount:
        return
    old_average = average_order_value(state)
    state.total_spent -= amount
    state.refunded_total += amount
    changed.update(("total_spent", "refunded_total"))
    if average_order_value(state) != old_average:
        changed.add("average_order_value")


def average_order_value(state: FeatureState) -> int | None:
    """total_spent / order_count in money units, rounded half-to-even; None without orders."""
    count = state.order_count
    return divide_half_even(state.total_spent, count) if count else None


# ---- subscriptions --------------------------------------------------------


def _apply_started(
    state: FeatureState, data: SubscriptionData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    _note_subscription(state, data, at_ms, True, changed)


def _apply_cancelled(
    state: FeatureState, data: SubscriptionData, at_ms: int, keep_from: int, changed: Changed
) -> None:
    _note_subscription(state, data, at_ms, False, changed)


def _note_subscription(
    state: FeatureState, data: SubscriptionData, at_ms: int, active: bool, changed: Changed
) -> None:
    """Each subscription's latest event (by occurred_at) says whether it is active."""
    known = state.subscriptions.get(data.subscription_id)
    if known is not None and at_ms < known[1]:
        return
    state.subscriptions[data.subscription_id] = (_shared(data.product_id), at_ms, active)
    subs = state.subscriptions.values()
    _assign(state, "active_subscriptions", {p for p, _, on in subs if on}, changed)
    _assign(state, "cancelled_subscriptions", {p for p, _, on in subs if not on}, changed)
    if active or (known is not None and known[2]):  # a start time moved: windows changed
        changed.add("active_subscriptions")


_CREATED_EVENTS: Final = frozenset({ProspectCreated, CustomerCreated})
_REDUCERS: Final[dict[type, _Reducer]] = {
    ProspectCreated: _apply_profile,
    CustomerCreated: _apply_profile,
    CustomerUpdated: _apply_profile,
    OrderPlaced: _apply_order_placed,
    OrderDeclined: _apply_declined,
    OrderRefunded: _apply_refund,
    OrderChargeback: _apply_chargeback,
    SubscriptionStarted: _apply_started,
    SubscriptionCancelled: _apply_cancelled,
}
