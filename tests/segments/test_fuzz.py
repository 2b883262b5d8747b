"""Hostile input events: every one decodes or is an `InvalidEvent` with a code and a reason,
and every decoded one applies to a state, is stored and is shown without raising.

About 10,000 examples in all, split over strategies that aim at different parts of the
decoder: whole documents of any shape, envelopes with hostile values in one field, and
hostile bytes (invalid UTF-8, deep nesting, NaN and infinities, duplicate keys).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments.errors import INVALID_EVENT_CODES
from segments.events import (
    EVENT_TYPES,
    MAX_REASON_CHARS,
    CustomerDeleted,
    Event,
    InvalidEvent,
    decode_event,
    encode_event,
    occurred_ms,
)
from segments.features import (
    apply_event,
    decode_state,
    encode_state,
    feature_view,
    ms_to_rfc3339,
    new_state,
)
from tests.segments.helpers import T0_MS


def fuzz(examples: int) -> settings:
    """`examples` examples, no deadline (a 1 MB string takes its time), no health checks
    (the values are large on purpose)."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=list(HealthCheck))


DATA_KEYS = [
    "email", "first_name", "last_name", "phone", "billing", "shipping", "campaign_id",
    "affiliate_id", "tags", "properties", "order_id", "total", "currency", "products",
    "reason", "amount", "subscription_id", "product_id", "country", "category", "quantity",
    "price",
]  # fmt: skip
DATES = [
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:01", "0001-01-01T00:30:00-00:30",
    "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59-00:01", "9999-12-31T23:00:00+23:59",
    "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "2026-02-30T00:00:00Z",
    "2026-11-28T24:00:00Z", "2026-11-28T17:32:60Z", "2026-11-28T17:32:00", "2026-11-28",
    "2026-11-28T17:32:00+24:00", "2026-11-28T17:32:00.1234567891234Z", "-2026-11-28T00:00:00Z",
    "+02026-11-28T00:00:00Z", "2026-11-28T17:32:00z", "2026-11-28 17:32:00Z", "",
]  # fmt: skip

# -- values of any JSON kind, some huge, some nested deep ----------------------------
# Hypothesis draws small stand-ins ("\x00raw:N") for the huge and the malformed; `_dumps`
# writes each one's JSON text in its place, so nothing huge is drawn, shrunk or printed.

_RAW: list[bytes] = [
    b'"' + b"x" * 1_000_000 + b'"', b'"' + "é".encode() * 200_000 + b'"',
    b'"' + "\U0001f600".encode() * 100_000 + b'"', b'"' + b"\\u0000" * 1000 + b'"',
    b'"\\ud800"', b'"\\udfff\\ud800"', b"1" + b"0" * 400, b"-1" + b"0" * 400,
    str(2**63).encode(), str(-(2**63) - 1).encode(), str(2**64).encode(), b"1e308", b"-1e308",
    b"5e-324", b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"nan", b"0x10", b"01",
    b'"\xff"', b'"\xc3\x28"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"',
    *(b"[" * n + b"1" + b"]" * n for n in (100, 254, 255, 256, 1024, 1025, 5000)),
    *(b'{"data":' * n + b"{}" + b"}" * n for n in (100, 255, 256, 1025, 5000)),
]  # fmt: skip
_raw = st.integers(0, len(_RAW) - 1).map(lambda n: f"\x00raw:{n}")
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.sampled_from(DATES), st.sampled_from(EVENT_TYPES), _raw,
)
values = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(DATA_KEYS) | st.text(max_size=8), inner, max_size=4),
    max_leaves=6,
)
data_objects = st.dictionaries(st.sampled_from(DATA_KEYS), values, max_size=8)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=130) | values,
        "type": st.sampled_from(EVENT_TYPES) | st.text(max_size=20) | values,
        "occurred_at": st.sampled_from(DATES) | st.text(max_size=30) | values,
        "customer_id": st.text(max_size=20) | values,
        "data": data_objects | values,
    },
)
well_typed = st.fixed_dictionaries({
    "event_id": st.text(min_size=1, max_size=128) | _raw,
    "type": st.sampled_from(EVENT_TYPES),
    "occurred_at": st.sampled_from(DATES[:6]) | st.datetimes(
        timezones=st.timezones()).map(lambda d: d.isoformat()),
    "customer_id": st.text(min_size=1, max_size=20) | _raw,
    "data": st.fixed_dictionaries({}, optional={
        "order_id": st.text(min_size=1, max_size=4) | _SCALARS,
        "subscription_id": st.text(max_size=4) | _SCALARS,
        "product_id": st.text(max_size=4) | _SCALARS,
        "total": st.decimals(allow_nan=True).map(str) | _SCALARS,
        "amount": st.decimals(allow_nan=True).map(str) | _SCALARS,
        "email": _SCALARS, "tags": values, "properties": values,
        "billing": st.dictionaries(st.sampled_from(DATA_KEYS), _SCALARS, max_size=4) | _SCALARS,
        "products": st.lists(st.dictionaries(st.sampled_from(DATA_KEYS), _SCALARS, max_size=4),
                             max_size=3) | values,
    }),
})
_STAND_IN = re.compile(rb'"\\u0000raw:(\d+)"')


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def expand(sketch: bytes) -> bytes:
    """The hostile bytes of a sketch: each stand-in replaced by its raw JSON text."""
    return _STAND_IN.sub(lambda m: _RAW[int(m[1])], sketch)


# -- hostile bytes ----------------------------------------------------------------------

_TOKENS = [
    b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"NaN", b"Infinity", b"-Infinity",
    b"nan", b"1e999", b"-1e999", b"0x10", b"01", b"1.", b".5", b"true", b"null",
    b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\xef\xbb\xbf",
    b'"\\ud800"', b'"\\u0000"', b"/*", b"'", b'"event_id"', b'"type"', b'"data"',
    *(f'"\\u0000raw:{n}"'.encode() for n in range(len(_RAW))),
]  # fmt: skip
_VALID = (b'{"event_id":"e","type":"order.placed","occurred_at":"2026-11-28T17:32:00Z",'
          b'"customer_id":"c","data":{"order_id":"o","total":1}}')


def _spliced(parts: tuple[int, bytes]) -> bytes:
    at, inserted = parts
    return _VALID[:at] + inserted + _VALID[at:]


hostile_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(_TOKENS), max_size=30).map(b"".join),
    st.tuples(st.integers(0, len(_VALID)), st.sampled_from(_TOKENS) | st.binary(max_size=4))
    .map(_spliced),
    st.sampled_from([
        _VALID.replace(b'"o"', b'"\xff"'), _VALID.replace(b'"c"', b'"\xed\xa0\x80"'),
        _VALID.replace(b'"e"', b'"\\ud800"'), _VALID[:-1] + b',"x":"\xc3\x28"}',
        _VALID[:-1] + b',"type":"order.refunded"}',
        _VALID[:-1] + b',"data":{"order_id":"o","total":"NaN"}}',
        _VALID[:-1] + b',"data":{"order_id":"o","total":"-Infinity"}}',
        _VALID[:-1] + b',"occurred_at":"0001-01-01T00:00:00+01:00"}',
        _VALID[:-1] + b',"customer_id":null,"customer_id":"c"}',
        _VALID[:-1] + b',"data":{"order_id":"o","total":1,"total":"1e999"}}',
    ]),
)


# -- the property -------------------------------------------------------------------------


def check(raw: bytes | str) -> None:
    """Decodes, or is an `InvalidEvent` with a known code and a reason; a decoded event
    applies, is stored and is shown without raising."""
    try:
        event = decode_event(raw)
    except InvalidEvent as exc:
        assert exc.code in INVALID_EVENT_CODES, exc
        assert exc.path.startswith("$"), exc
        assert 0 < len(exc.reason) <= MAX_REASON_CHARS, exc.reason[:100]
        return
    _applies(event)


def _applies(event: Event) -> None:
    assert decode_event(encode_event(event)) == event
    moment = occurred_ms(event)
    assert RFC3339_MS.fullmatch(ms_to_rfc3339(moment))
    if isinstance(event, CustomerDeleted):  # an erasure, done by the caller
        return
    state = new_state()
    for now in (T0_MS, moment):
        apply_event(state, event, now)
        decode_state(encode_state(state))
        feature_view(state, now)


@fuzz(4000)
@given(st.one_of(envelopes, values).map(_dumps))
def test_any_document(sketch: bytes) -> None:
    check(expand(sketch))


@fuzz(3000)
@given(well_typed.map(_dumps))
def test_envelopes_with_hostile_values(sketch: bytes) -> None:
    check(expand(sketch))


@fuzz(2500)
@given(hostile_bytes)
def test_hostile_bytes(sketch: bytes) -> None:
    raw = expand(sketch)
    check(raw)
    check(raw.decode("utf-8", "surrogateescape"))  # the str path: lone surrogates for bad bytes


# -- dates: every accepted one is shown as RFC 3339 with a four-digit year ----------------

RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_EPOCH = datetime(1970, 1, 1)
_ANY_DATA = {"order_id": "o", "total": 1, "amount": 1, "subscription_id": "s", "product_id": "p"}
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
edges = st.sampled_from([datetime.min, datetime.max, datetime(1, 1, 2), datetime(9999, 12, 30)])


@fuzz(500)
@given(st.datetimes() | edges, offsets, st.sampled_from(EVENT_TYPES))
def test_every_accepted_date_is_rfc3339_with_four_digit_years(
    written: datetime, offset: timezone, kind: str
) -> None:
    zone = "Z" if offset.utcoffset(None) == timedelta(0) else str(offset.tzname(None))[3:]
    body = {**json.loads(_VALID), "type": kind, "data": _ANY_DATA,
            "occurred_at": written.isoformat() + zone}
    since_epoch = written - _EPOCH - offset.utcoffset(None)  # the instant, as a timedelta
    in_range = datetime.min - _EPOCH <= since_epoch <= datetime.max - _EPOCH
    try:
        event = decode_event(json.dumps(body))
    except InvalidEvent as exc:
        assert not in_range, exc
        assert (exc.code, exc.path) == ("invalid_value", "$.occurred_at")
        return
    assert in_range
    shown = ms_to_rfc3339(occurred_ms(event))
    assert RFC3339_MS.fullmatch(shown), shown
    instant = written.replace(tzinfo=offset).astimezone(UTC)
    assert datetime.fromisoformat(shown) == instant.replace(
        microsecond=instant.microsecond // 1000 * 1000)
    _applies(event)


def test_the_first_and_the_last_instant_are_shown_with_four_digits() -> None:
    first = decode_event(_VALID.replace(b"2026-11-28T17:32:00Z", b"0001-01-01T00:00:00Z"))
    last = decode_event(_VALID.replace(b"2026-11-28T17:32:00Z", b"9999-12-31T23:59:59.999Z"))
    assert ms_to_rfc3339(occurred_ms(first)) == "0001-01-01T00:00:00.000Z"
    assert ms_to_rfc3339(occurred_ms(last)) == "9999-12-31T23:59:59.999Z"
    for outside in (b"0001-01-01T00:00:00+00:01", b"9999-12-31T23:59:59-00:01"):
        with pytest.raises(InvalidEvent) as info:
            decode_event(_VALID.replace(b"2026-11-28T17:32:00Z", outside))
        assert (info.value.code, info.value.path) == ("invalid_value", "$.occurred_at")
    # times computed from those (a timer 60 days on) are shown, with ISO 8601's expanded year
    assert ms_to_rfc3339(occurred_ms(last) + 60 * 86_400_000) == "+10000-02-29T23:59:59.999Z"


def test_invalid_utf8_and_deep_nesting_are_invalid_json() -> None:
    for raw in (_VALID[:-1] + b',"ignored":"\xff"}', _VALID.replace(b'"o"', b'"\xed\xa0\x80"'),
                '{"event_id":"\ud800"}', b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"):
        with pytest.raises(InvalidEvent) as info:
            decode_event(raw)
        assert info.value.code == "invalid_json", info.value


def test_a_reason_quoting_a_huge_value_is_cut() -> None:
    with pytest.raises(InvalidEvent) as info:
        decode_event(_VALID.replace(b'"order.placed"', _RAW[0]))
    reason = info.value.reason
    assert (info.value.code, info.value.path) == ("unknown_type", "$.type")
    assert len(reason) <= MAX_REASON_CHARS and "characters cut" in reason
    assert reason.endswith("subscription.cancelled")  # the known types are still named


def test_nan_and_infinities_are_refused_as_json_and_as_amounts() -> None:
    for text in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        with pytest.raises(InvalidEvent) as info:
            decode_event(_VALID.replace(b"1}", text + b"}"))
        assert info.value.code in {"invalid_json", "invalid_value"}, info.value
    for amount in ("NaN", "Infinity", "-Infinity", "sNaN"):
        with pytest.raises(InvalidEvent) as info:
            decode_event(_VALID.replace(b"1}", msgspec.json.encode(amount) + b"}"))
        assert (info.value.code, info.value.path) == ("invalid_value", "$.data.total")
