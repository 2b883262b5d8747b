"""Request bodies: read as JSON by hand, so the domain validators (not pydantic) judge them.

The JSON Schemas here only document the bodies in OpenAPI; `parse_definition` and
`decode_event` are what accept or reject.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from fastapi import Request

from segments.catalog import (
    DATETIME_OPS,
    NUMBER_OPS,
    PROPERTY_OPS,
    SEGMENT_OPS,
    SET_OPS,
    TEXT_OPS,
)
from segments.events import EVENT_TYPES
from streams.api.errors import ApiError

MAX_BODY_BYTES: Final = 4 << 20

_OPERATORS: Final = sorted({*TEXT_OPS, *NUMBER_OPS, *DATETIME_OPS, *SET_OPS, *SEGMENT_OPS,
                            *PROPERTY_OPS})
SEGMENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"

CONDITION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["field", "op"],
    "properties": {
        "field": {"type": "string", "description": "a field of GET /fields"},
        "op": {"type": "string", "enum": _OPERATORS},
        "value": {},
        "within_days": {"type": "integer", "minimum": 1},
    },
}
DEFINITION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["name", "groups"],
    "properties": {
        "id": {"type": "string", "pattern": SEGMENT_ID_PATTERN},
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "groups": {"type": "array", "minItems": 1, "maxItems": 5, "items": {
            "type": "object", "required": ["conditions"],
            "properties": {"conditions": {"type": "array", "minItems": 1, "maxItems": 9,
                                          "items": CONDITION_SCHEMA}}}},
        "auto_responder": {"type": "object", "required": ["profile_id", "list_id"],
                           "properties": {"profile_id": {"type": "string"},
                                          "list_id": {"type": "string"},
                                          "segment_id": {"type": "string"}}},
    },
}
EVENT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["event_id", "type", "occurred_at", "customer_id", "data"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "type": {"type": "string", "enum": list(EVENT_TYPES)},
        "occurred_at": {"type": "string", "format": "date-time"},
        "customer_id": {"type": "string", "minLength": 1},
        "data": {"type": "object"},
    },
}
EVENTS_SCHEMA: Final[dict[str, Any]] = {
    "oneOf": [EVENT_SCHEMA, {"type": "array", "items": EVENT_SCHEMA, "maxItems": 1000}],
}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
