"""Customer features: the state, its reducer, its codec and its JSON view.

This is the public face of `state`, `reducers` and `timeline`; the runtime
imports from here. `feature_view` renders a state as the JSON the HTTP API
returns for `GET /customers/{id}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from segments.catalog import ANY_FIELD, CONTRACT_FIELDS, EVERY_FIELD
from segments.money import MONEY_SCALE, money_to_float
from segments.reducers import apply_event, average_order_value
from segments.state import (
    MAX_SEEN_IDS,
    FeatureState,
    decode_state,
    encode_state,
    mask_bytes,
    new_state,
    stable_hash,
)
from segments.timeline import TIMELINE_HORIZON_DAYS

__all__ = [
    "ANY_FIELD",
    "CONTRACT_FIELDS",
    "EVERY_FIELD",
    "MAX_SEEN_IDS",
    "MONEY_SCALE",
    "TIMELINE_HORIZON_DAYS",
    "FeatureState",
    "apply_event",
    "average_order_value",
    "decode_state",
    "encode_state",
    "feature_view",
    "mask_bytes",
    "mask_slots",
    "ms_to_rfc3339",
    "new_state",
    "stable_hash",
]

_TEXT_FIELDS: Final = (
    "contact_type", "email", "email_domain", "first_name", "last_name", "phone",
    "billing_country", "billing_state", "billing_city", "billing_postal_code",
    "shipping_country", "shipping_state", "shipping_city", "shipping_postal_code",
    "campaign_id", "affiliate_id",
)  # fmt: skip
_SET_FIELDS: Final = (
    "tags", "products_purchased", "categories_purchased",
    "active_subscriptions", "cancelled_subscriptions",
)  # fmt: skip
_TIME_FIELDS: Final = ("created_at", "first_order_at", "last_order_at")
_COUNT_FIELDS: Final = ("order_count", "decline_count", "refund_count", "chargeback_count")
_Y2000: Final = datetime(2000, 1, 1, tzinfo=UTC)
_Y2000_MS: Final = 946_684_800_000
_CYCLE_MS: Final = 146_097 * 86_400_000
"""The Gregorian calendar repeats every 400 years (146,097 days), from 2000-01-01 on."""


def ms_to_rfc3339(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC with milliseconds: "2026-11-28T17:32:00.120Z".

    The year has four digits from 0001 to 9999, the years an event's `occurred_at` may
    have. Any other instant (a timer past year 9999, computed from one) is written with
    ISO 8601's expanded year, a sign and five or more digits ("+10000-02-29T00:00:00.000Z"),
    instead of failing.
    """
    cycles, within = divmod(ms - _Y2000_MS, _CYCLE_MS)
    moment = _Y2000 + timedelta(milliseconds=within)
    year = moment.year + 400 * cycles
    shown = f"{year:04d}" if 1 <= year <= 9999 else f"{year:+06d}"
    return (f"{shown}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


def mask_slots(mask: int) -> list[int]:
    """The slot numbers whose bit is set in `mask`, ascending."""
    slots = []
    while mask:
        low = mask & -mask
        slots.append(low.bit_length() - 1)
        mask ^= low
    return slots


def feature_view(
    state: FeatureState, now_ms: int, slot_ids: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Every contract field as JSON-able values: money as numbers, times as RFC 3339.

    `segments` lists segment ids when `slot_ids` (slot -> id) is given, else slots.
    `now_ms` is accepted for symmetry with evaluation; the view has no windows.
    """
    view: dict[str, Any] = {name: getattr(state, name) for name in _TEXT_FIELDS}
    view.update({name: sorted(getattr(state, name)) for name in _SET_FIELDS})
    view.update({name: getattr(state, name) for name in _COUNT_FIELDS})
    view.update({name: _time(getattr(state, name)) for name in _TIME_FIELDS})
    view["total_spent"] = money_to_float(state.total_spent)
    view["refunded_total"] = money_to_float(state.refunded_total)
    view["average_order_value"] = _money(average_order_value(state))
    view["last_order_total"] = _money(state.last_order_total)
    view["properties"] = dict(state.properties)
    slots = mask_slots(state.segments_mask)
    view["segments"] = sorted(slot_ids[s] for s in slots if s in slot_ids) if slot_ids else slots
    return view


def _time(ms: int | None) -> str | None:
    return None if ms is None else ms_to_rfc3339(ms)


def _money(units: int | None) -> float | None:
    return None if units is None else money_to_float(units)
