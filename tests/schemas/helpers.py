"""Run one JSON text through both judges: the stream's decoder and the JSON Schemas.

Instances are parsed for jsonschema with `parse_float=Decimal`, so a number keeps the
form it was written in (`2.0` is not the integer `2`, `1e20` is not an integer), as
msgspec sees it. NaN and Infinity literals are not JSON and fail for both.
"""

from __future__ import annotations

import json
from decimal import Decimal
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

from segments.events import InvalidEvent, decode_event
from streams.schemas import load_schema

T0 = "2026-11-28T17:32:00Z"


@cache
def validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(raw: bytes) -> Any:
    return json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)


def raw_of(sample: Any) -> bytes:
    if isinstance(sample, bytes):
        return sample
    return json.dumps(sample, ensure_ascii=False).encode()


def decoder_accepts(raw: bytes) -> bool:
    try:
        decode_event(raw)
    except InvalidEvent:
        return False
    return True


def schema_accepts(raw: bytes, name: str = "event") -> bool:
    try:
        instance = parse(raw)
    except ValueError:
        return False
    return validator(name).is_valid(instance)


def per_type_accepts(raw: bytes) -> bool | None:
    """The verdict of the schema of the sample's own type; None without a known type."""
    try:
        instance = parse(raw)
    except ValueError:
        return None
    kind = instance.get("type") if isinstance(instance, dict) else None
    if not isinstance(kind, str) or kind not in _TYPES:
        return None
    return validator(kind).is_valid(instance)


def event(kind: str, data: Any, **envelope: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {"event_id": "e-1", "type": kind, "occurred_at": T0,
                              "customer_id": "c-1042", "data": data}
    sample.update(envelope)
    return sample


_TYPES = frozenset(load_schema("event")["properties"]["type"]["enum"])
