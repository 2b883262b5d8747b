"""`FeatureState`: everything the engine knows about one customer, and its codec.

The Struct holds every stored contract field under its contract name (timestamps
as epoch ms, money as integer units, sets as sets; average_order_value is derived
on demand, `segments` is the membership bitmask `segments_mask`), and the
bookkeeping the reducers need: window timelines, order-id and event-id hashes,
subscriptions and the sources of fields filled from two topics.

Encoding is msgpack with `array_like=True`: compact, and new fields must only
ever be appended at the end (with defaults) so stored states keep decoding.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from hashlib import blake2b
from struct import Struct
from typing import Final

import msgspec

from segments.timeline import Int64Array, Timeline, empty_array

MAX_SEEN_IDS: Final = 4096
"""Applied event ids remembered per customer: at least the most recent half, at most all."""

_SEEN_GENERATION: Final = MAX_SEEN_IDS // 2
_FORMAT_VERSION: Final = 1

PropertyValue = str | int | float | bool
AddressTuple = tuple[str | None, str | None, str | None, str | None]
Subscription = tuple[str, int, bool]
"""(product_id, occurred_ms of its latest event, active)."""


class FeatureState(msgspec.Struct, array_like=True, gc=False):
    """One customer's features. Field order is the storage format: append only."""

    contact_type: str = "prospect"
    email: str | None = None
    email_domain: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    billing_country: str | None = None
    billing_state: str | None = None
    billing_city: str | None = None
    billing_postal_code: str | None = None
    shipping_country: str | None = None
    shipping_state: str | None = None
    shipping_city: str | None = None
    shipping_postal_code: str | None = None
    campaign_id: str | None = None
    affiliate_id: str | None = None
    tags: set[str] = msgspec.field(default_factory=set)
    properties: dict[str, PropertyValue] = msgspec.field(default_factory=dict)
    created_at: int | None = None
    order_count: int = 0
    total_spent: int = 0
    first_order_at: int | None = None
    last_order_at: int | None = None
    last_order_total: int | None = None
    products_purchased: set[str] = msgspec.field(default_factory=set)
    categories_purchased: set[str] = msgspec.field(default_factory=set)
    decline_count: int = 0
    refund_count: int = 0
    refunded_total: int = 0
    chargeback_count: int = 0
    active_subscriptions: set[str] = msgspec.field(default_factory=set)
    cancelled_subscriptions: set[str] = msgspec.field(default_factory=set)
    segments_mask: int = 0
    # Bookkeeping below: not contract fields.
    orders: Timeline = msgspec.field(default_factory=Timeline)
    declines: Timeline = msgspec.field(default_factory=Timeline)
    refunds: Timeline = msgspec.field(default_factory=Timeline)
    chargebacks: Timeline = msgspec.field(default_factory=Timeline)
    order_ids: Int64Array = msgspec.field(default_factory=empty_array)
    """Sorted stable hashes of the placed orders' ids."""
    subscriptions: dict[str, Subscription] = msgspec.field(default_factory=dict)
    seen_recent: Int64Array = msgspec.field(default_factory=empty_array)
    """Sorted stable hashes of the most recently applied event ids."""
    seen_older: Int64Array = msgspec.field(default_factory=empty_array)
    """The generation before `seen_recent`."""
    created_from_profile: bool = False
    campaign_at: int | None = None
    affiliate_at: int | None = None
    billing_from_profile: bool = False
    order_billing: AddressTuple | None = None
    order_billing_at: int | None = None
    shipping_from_profile: bool = False
    order_shipping: AddressTuple | None = None
    order_shipping_at: int | None = None
    product_times: dict[str, int] = msgspec.field(default_factory=dict)
    """Product id -> time of its latest placed order, within the horizon (windowed sets)."""
    category_times: dict[str, int] = msgspec.field(default_factory=dict)
    """Category -> time of its latest placed order, within the horizon."""


def new_state() -> FeatureState:
    """The state of a customer the engine has never seen."""
    return FeatureState()


_BLAKE2B_64: Final = blake2b(digest_size=8)
_INT64_LE: Final = Struct("<q").unpack


def stable_hash(text: str) -> int:
    """A signed 64-bit hash that is the same in every process (unlike `hash()`).

    blake2b with an 8-byte digest, read as a little-endian int64. Copying a prepared hasher
    and unpacking with `struct` gives the same value as `int.from_bytes(blake2b(data,
    digest_size=8).digest(), "little", signed=True)`, which stored hashes were made with, at
    less cost (docs/design.md, "Stable hashes from a prepared hasher").
    """
    hasher = _BLAKE2B_64.copy()
    hasher.update(text.encode())
    return _INT64_LE(hasher.digest())[0]  # type: ignore[no-any-return]


def sorted_insert(hashes: Int64Array, value: int) -> bool:
    """Insert into a sorted array (binary search, one memmove); False if already there.

    Sorted packed arrays instead of sets: the same O(log n) lookups in practice,
    a tenth of the memory, nothing for the garbage collector, and the codec just
    copies bytes.
    """
    i = bisect_left(hashes, value)
    if i < len(hashes) and hashes[i] == value:
        return False
    hashes.insert(i, value)
    return True


def _contains(hashes: Int64Array, value: int) -> bool:
    i = bisect_left(hashes, value)
    return i < len(hashes) and hashes[i] == value


def remember_event(state: FeatureState, event_id: str) -> bool:
    """Record an applied event id (by its stable hash); False when it was already applied.

    Two generations of `MAX_SEEN_IDS // 2` ids: when the recent one fills, it
    becomes the older one and the previous older one is forgotten.
    """
    event_hash = stable_hash(event_id)
    if _contains(state.seen_older, event_hash):
        return False
    recent = state.seen_recent
    if not sorted_insert(recent, event_hash):
        return False
    if len(recent) >= _SEEN_GENERATION:
        state.seen_older = recent
        state.seen_recent = array("q")
    return True


def _decode_array(kind: type, value: object) -> object:
    if kind is array and isinstance(value, bytes):
        packed = array("q")
        packed.frombytes(value)
        return packed
    raise NotImplementedError(f"cannot decode {kind.__name__}")


# Timelines are int64 arrays, stored as bin in native byte order (little-endian on
# every platform the service runs on).
# The hook is array.tobytes itself, not a Python function around it (one call less per array;
# docs/design.md, "State codec"). It is only ever called for the arrays (every other field type
# is msgpack's own); anything else would fail loudly with tobytes' TypeError.
_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=array.tobytes)
_DECODER: Final = msgspec.msgpack.Decoder(tuple[int, bytes, FeatureState], dec_hook=_decode_array)


def encode_state(state: FeatureState) -> bytes:
    """msgpack bytes of the state; the mask travels as bytes since it may exceed 64 bits."""
    mask = state.segments_mask
    if not mask:
        return _ENCODER.encode((_FORMAT_VERSION, b"", state))
    state.segments_mask = 0  # in place, not a copy of the whole struct: restored below
    try:
        return _ENCODER.encode((_FORMAT_VERSION, mask_bytes(mask), state))
    finally:
        state.segments_mask = mask


def decode_state(raw: bytes) -> FeatureState:
    """Inverse of `encode_state`."""
    version, mask, state = _DECODER.decode(raw)
    if version != _FORMAT_VERSION:
        raise ValueError(f"stored state has format {version}, this code reads {_FORMAT_VERSION}")
    state.segments_mask = int.from_bytes(mask, "little")
    return state


def mask_bytes(mask: int) -> bytes:
    """A membership mask as bytes: little-endian, no trailing zero bytes."""
    return mask.to_bytes((mask.bit_length() + 7) // 8, "little")
