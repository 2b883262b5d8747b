"""Input events (contract section 4): typed msgspec Structs and a strict decoder.

One Struct per event type, a tagged union on `"type"`, decoded in one pass by a
`msgspec.json.Decoder`. Unknown extra fields are ignored.
The text must be UTF-8 throughout, ignored fields included, and `occurred_at` an instant
of the years 0001 to 9999 in UTC (what `datetime` holds and `ms_to_rfc3339` writes).
Every decoding failure becomes an `InvalidEvent` with a stable `code` and a
reason that names the JSON path, ready for the dead-letter topic.

Absent versus null in profile events: profile `data` fields default to `UNSET`
(absent: keep the old value); an explicit `null` clears the value. Order and
subscription `data` fields are plain optionals (absent and null both mean none).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, UnsetType

from segments.errors import InvalidEvent, invalid_event_from
from segments.money import amount_problem

__all__ = [
    "EVENT_TYPES",
    "TOPIC_OF_TYPE",
    "TYPE_OF_CLASS",
    "Address",
    "CustomerCreated",
    "CustomerDeleted",
    "CustomerUpdated",
    "Event",
    "InvalidEvent",
    "OrderChargeback",
    "OrderDeclined",
    "OrderPlaced",
    "OrderRefunded",
    "ProfileAddress",
    "ProfileData",
    "ProspectCreated",
    "SubscriptionCancelled",
    "SubscriptionStarted",
    "decode_event",
    "encode_event",
    "event_type",
    "occurred_ms",
]

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Id = Annotated[str, msgspec.Meta(min_length=1)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
PropertyValue = str | int | float | bool | None

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _check_amount(field: str, amount: Decimal | None) -> None:
    """Raise a ValueError msgspec turns into a ValidationError at this struct's path."""
    if amount is None:
        return
    problem = amount_problem(amount)
    if problem is not None:
        # "field `x`: ..." is rewritten by segments.errors into a path ending in `.x`.
        raise ValueError(f"field `{field}`: invalid amount, {problem}")


class ProfileAddress(msgspec.Struct, frozen=True, gc=False):
    """An address in a profile event; absent keys keep the old value, null clears."""

    country: str | UnsetType | None = UNSET
    state: str | UnsetType | None = UNSET
    city: str | UnsetType | None = UNSET
    postal_code: str | UnsetType | None = UNSET


class Address(msgspec.Struct, frozen=True, gc=False):
    """An address on an order: a whole address, absent keys mean none."""

    country: str | None = None
    state: str | None = None
    city: str | None = None
    postal_code: str | None = None


class ProfileData(msgspec.Struct, frozen=True, gc=False):
    """`data` of prospect.created, customer.created and customer.updated."""

    email: str | UnsetType | None = UNSET
    first_name: str | UnsetType | None = UNSET
    last_name: str | UnsetType | None = UNSET
    phone: str | UnsetType | None = UNSET
    billing: ProfileAddress | UnsetType | None = UNSET
    shipping: ProfileAddress | UnsetType | None = UNSET
    campaign_id: str | UnsetType | None = UNSET
    affiliate_id: str | UnsetType | None = UNSET
    tags: list[str] | UnsetType | None = UNSET
    properties: dict[str, PropertyValue] | UnsetType | None = UNSET

    def __post_init__(self) -> None:
        if isinstance(self.properties, dict):
            for name, value in self.properties.items():
                _check_property(name, value)


def _check_property(name: str, value: PropertyValue) -> None:
    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"field `properties`: `{name}` is a number out of range")
    if not name:
        raise ValueError("field `properties`: a property name may not be empty")


class Product(msgspec.Struct, frozen=True, gc=False):
    """One line of an order."""

    product_id: str | None = None
    category: str | None = None
    quantity: int | None = None
    price: Decimal | None = None
    """Checked by `OrderPlacedData`: one Python call per order, not one more per line."""


class OrderPlacedData(msgspec.Struct, frozen=True, gc=False):
    """`data` of order.placed."""

    order_id: Id
    total: Decimal
    currency: str | None = None
    products: list[Product] | None = None
    campaign_id: str | None = None
    affiliate_id: str | None = None
    billing: Address | None = None
    shipping: Address | None = None

    def __post_init__(self) -> None:
        _check_amount("total", self.total)
        for i, line in enumerate(self.products or ()):
            if line.price is not None and amount_problem(line.price) is not None:
                _check_amount(f"products[{i}].price", line.price)  # names the line


class OrderDeclinedData(msgspec.Struct, frozen=True, gc=False):
    """`data` of order.declined."""

    order_id: Id
    total: Decimal | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        _check_amount("total", self.total)


class AmountData(msgspec.Struct, frozen=True, gc=False):
    """`data` of order.refunded and order.chargeback."""

    order_id: Id
    amount: Decimal

    def __post_init__(self) -> None:
        _check_amount("amount", self.amount)


class SubscriptionData(msgspec.Struct, frozen=True, gc=False):
    """`data` of subscription.started and subscription.cancelled."""

    subscription_id: Id
    product_id: Id


class NoData(msgspec.Struct, frozen=True, gc=False):
    """`data` of customer.deleted: any object, its fields ignored."""


class _Envelope(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    event_id: EventId
    occurred_at: Timestamp
    customer_id: Id


class ProspectCreated(_Envelope, frozen=True, gc=False, tag="prospect.created"):
    data: ProfileData


class CustomerCreated(_Envelope, frozen=True, gc=False, tag="customer.created"):
    data: ProfileData


class CustomerUpdated(_Envelope, frozen=True, gc=False, tag="customer.updated"):
    data: ProfileData


class CustomerDeleted(_Envelope, frozen=True, gc=False, tag="customer.deleted"):
    data: NoData


class OrderPlaced(_Envelope, frozen=True, gc=False, tag="order.placed"):
    data: OrderPlacedData


class OrderDeclined(_Envelope, frozen=True, gc=False, tag="order.declined"):
    data: OrderDeclinedData


class OrderRefunded(_Envelope, frozen=True, gc=False, tag="order.refunded"):
    data: AmountData


class OrderChargeback(_Envelope, frozen=True, gc=False, tag="order.chargeback"):
    data: AmountData


class SubscriptionStarted(_Envelope, frozen=True, gc=False, tag="subscription.started"):
    data: SubscriptionData


class SubscriptionCancelled(_Envelope, frozen=True, gc=False, tag="subscription.cancelled"):
    data: SubscriptionData


Event = (
    ProspectCreated
    | CustomerCreated
    | CustomerUpdated
    | CustomerDeleted
    | OrderPlaced
    | OrderDeclined
    | OrderRefunded
    | OrderChargeback
    | SubscriptionStarted
    | SubscriptionCancelled
)

_CLASSES: Final[tuple[type[_Envelope], ...]] = (
    ProspectCreated,
    CustomerCreated,
    CustomerUpdated,
    CustomerDeleted,
    OrderPlaced,
    OrderDeclined,
    OrderRefunded,
    OrderChargeback,
    SubscriptionStarted,
    SubscriptionCancelled,
)
TYPE_OF_CLASS: Final[dict[type, str]] = {
    cls: str(cls.__struct_config__.tag) for cls in _CLASSES
}
EVENT_TYPES: Final[tuple[str, ...]] = tuple(TYPE_OF_CLASS.values())
TOPIC_OF_TYPE: Final[dict[str, str]] = {
    name: "customers" if name.startswith(("customer.", "prospect.")) else "orders"
    for name in EVENT_TYPES
}

_DECODER: Final[msgspec.json.Decoder[Event]] = msgspec.json.Decoder(Event)
_ENCODER: Final = msgspec.json.Encoder()
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
MAX_REASON_CHARS: Final = 600
"""The longest reason an `InvalidEvent` of `decode_event` carries."""
_EDGE_YEARS: Final = frozenset({1, 9999})
"""The years in which a time with an offset may be outside the years 1 to 9999 in UTC."""


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one JSON event; raise `InvalidEvent` when it is not one.

    A reason quotes the value it is about; a long one is cut in the middle to at most
    `MAX_REASON_CHARS`, since reasons go into dead letters' headers, logs and answers.
    """
    try:
        return _decode(raw)
    except InvalidEvent as exc:
        if len(exc.reason) <= MAX_REASON_CHARS:
            raise
        half = MAX_REASON_CHARS // 2 - 20
        cut = f"{exc.reason[:half]} … ({len(exc.reason) - 2 * half} characters cut) … "
        raise InvalidEvent(exc.code, cut + exc.reason[-half:], exc.path) from None


def _decode(raw: bytes | str) -> Event:
    if not raw.isascii():
        _check_utf8(raw)
    try:
        event = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: test it first
        raise invalid_event_from(str(exc), EVENT_TYPES) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("invalid_json", f"not valid JSON: {exc}", "$") from None
    except RecursionError:  # msgspec's limit on nesting (Python's recursion limit)
        raise InvalidEvent("invalid_json", "not valid JSON: nested too deeply", "$") from None
    if event.occurred_at.year in _EDGE_YEARS:
        _check_in_range(event.occurred_at)
    return event


def _check_utf8(raw: bytes | str) -> None:
    """JSON text is UTF-8. msgspec checks only the strings it decodes (and raises a
    UnicodeError for those), so bytes anywhere else, in an ignored field say, are checked here."""
    try:
        if isinstance(raw, bytes):
            raw.decode()
        else:
            raw.encode()  # a str holding a lone surrogate is not UTF-8 either
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise InvalidEvent("invalid_json", f"not valid JSON: not UTF-8 at position "
                           f"{exc.start} ({exc.reason})", "$") from None


def _check_in_range(moment: datetime) -> None:
    """Years 1 to 9999 as written may leave that range once the offset is applied (the
    instant of "0001-01-01T00:00:00+01:00" is in year 0), where no time can be computed."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent(
            "invalid_value",
            f"{moment.isoformat()} is before 0001-01-01T00:00:00Z or after "
            "9999-12-31T23:59:59.999999Z at `$.occurred_at`", "$.occurred_at") from None


def encode_event(ev: Event) -> bytes:
    """JSON bytes that `decode_event` turns back into an equal event."""
    return _ENCODER.encode(ev)


def event_type(ev: Event) -> str:
    """The contract `type` of an event, e.g. "order.placed"."""
    return TYPE_OF_CLASS[type(ev)]


def occurred_ms(ev: Event) -> int:
    """`occurred_at` as integer epoch milliseconds (floor)."""
    return (ev.occurred_at - _EPOCH) // _MS
