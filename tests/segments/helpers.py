"""Builders shared by the segments tests: events as JSON, decoded; definitions; times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from segments.definitions import SegmentDefinition, parse_definition
from segments.events import Event, decode_event

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
T0_MS = 1_795_867_200_000
DAY = 86_400_000
HOUR = 3_600_000

_counter = iter(range(10**9))


def iso(ms: int) -> str:
    """Epoch ms as an RFC 3339 UTC string."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.isoformat().replace("+00:00", "Z")


def raw_event(
    event_type: str,
    data: dict[str, Any] | None = None,
    *,
    at: int = T0_MS,
    event_id: str | None = None,
    customer_id: str = "c-1",
) -> bytes:
    """JSON bytes of one event."""
    return msgspec.json.encode({
        "event_id": event_id or f"e-{next(_counter)}",
        "type": event_type,
        "occurred_at": iso(at),
        "customer_id": customer_id,
        "data": data or {},
    })


def event(event_type: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Event:
    """A decoded event."""
    return decode_event(raw_event(event_type, data, **kwargs))


def order(order_id: str, total: Any, **kwargs: Any) -> Event:
    """An order.placed event; extra `data` keys through `data=`."""
    data = {"order_id": order_id, "total": total, **kwargs.pop("data", {})}
    return event("order.placed", data, **kwargs)


def segment(
    *groups: list[dict[str, Any]], segment_id: str = "s", slot: int = 0, name: str = "seg"
) -> SegmentDefinition:
    """A parsed definition from groups of condition dicts."""
    body = {"name": name, "groups": [{"conditions": g} for g in groups]}
    return parse_definition(body, segment_id=segment_id, version=1, slot=slot)


def cond(field: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A condition dict; `value` left out when None."""
    raw: dict[str, Any] = {"field": field, "op": op, **extra}
    if value is not None:
        raw["value"] = value
    return raw
