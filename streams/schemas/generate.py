"""The one source of the JSON Schemas in this directory; run it to rewrite the files.

    python -m streams.schemas.generate          # rewrite streams/schemas/*.json
    python -m streams.schemas.generate --check  # exit 1 when a file differs

The schemas describe what `segments.events.decode_event` accepts (contract section 4)
and the membership records of `segments.membership` (contract section 7). Each file is
self-contained (no cross-file `$ref`), so a producer can use one file on its own.
Where the decoder accepts more than the contract promises (a few decimal-string and
offset spellings), the schemas follow the contract and are the stricter side; the
tests in `tests/schemas/` list those cases.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from segments.events import EVENT_TYPES, TOPIC_OF_TYPE

Schema = dict[str, Any]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
ID_BASE: Final = "urn:segstream:schema:"

MEMBERSHIP: Final = "membership"
ENVELOPE: Final = "event"
NAMES: Final = (ENVELOPE, *EVENT_TYPES, MEMBERSHIP)

# RFC 3339 date-time with a required offset, as msgspec parses it: real calendar
# dates (leap years included, year 0000 excluded), no leap second, `T`, `t` or a
# space between date and time, any number of fraction digits, `Z`, `z` or ±hh:mm.
# `(?!\n)` before `$` keeps Python's `re` (whose `$` also matches before a final
# newline) as strict as ECMA-262.
_DAY: Final = (
    r"(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_TIME: Final = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
_OFFSET: Final = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# The decoder rounds to microseconds: the last instant of 9999 must not round up.
_LAST: Final = r"(?!9999-12-31[Tt ]23:59:59\.999999[5-9])"
TIMESTAMP_PATTERN: Final = rf"^(?!0000){_LAST}{_DAY}[Tt ]{_TIME}{_OFFSET}(?!\n)$"

# A decimal string for an amount: digits with an optional fraction, at most
# 100000000000 (segments.money.MAX_AMOUNT); leading zeros allowed.
MAX_AMOUNT: Final = 100_000_000_000
DECIMAL_PATTERN: Final = r"^0*(?:[0-9]{1,11}(?:\.[0-9]+)?|100000000000(?:\.0+)?)(?!\n)$"

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _string(description: str | None = None, *, min_length: int = 0,
            max_length: int | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    if max_length is not None:
        schema["maxLength"] = max_length
    if description:
        schema["description"] = description
    return schema


def _defs() -> dict[str, Schema]:
    """Shared pieces, copied into each file's `$defs`."""
    return {
        "timestamp": {
            "type": "string",
            "pattern": TIMESTAMP_PATTERN,
            "format": "date-time",
            "description": "RFC 3339 date-time with a time zone: `Z` or ±hh:mm is required "
                           "(`2026-11-28T17:32:00Z`, `2026-11-28T18:32:00.5+01:00`).",
            "examples": ["2026-11-28T17:32:00Z"],
        },
        "money": {
            "description": "An amount: a JSON number or a decimal string, 0 to 100000000000. "
                           "Digits beyond four decimals are rounded half-to-even.",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_AMOUNT},
                {"type": "string", "pattern": DECIMAL_PATTERN},
            ],
            "examples": [129.9, "129.90"],
        },
        "id": _string("A non-empty identifier.", min_length=1),
        "optional_string": _nullable({"type": "string"}),
        "profile_address": _nullable({
            "type": "object",
            "description": "An address; in a profile event an absent key keeps the stored "
                           "value and null clears it.",
            "properties": {
                "country": {**_nullable({"type": "string"}),
                            "description": "ISO 3166-1 alpha-2 code, e.g. `US`."},
                "state": {"$ref": "#/$defs/optional_string"},
                "city": {"$ref": "#/$defs/optional_string"},
                "postal_code": {"$ref": "#/$defs/optional_string"},
            },
        }),
        "order_address": _nullable({
            "type": "object",
            "description": "The address of an order; absent keys mean none.",
            "properties": {
                "country": {**_nullable({"type": "string"}),
                            "description": "ISO 3166-1 alpha-2 code, e.g. `US`."},
                "state": {"$ref": "#/$defs/optional_string"},
                "city": {"$ref": "#/$defs/optional_string"},
                "postal_code": {"$ref": "#/$defs/optional_string"},
            },
        }),
        "optional_money": _nullable({"$ref": "#/$defs/money"}),
    }


def _profile_data() -> Schema:
    return {
        "type": "object",
        "description": "Profile fields; all optional. An absent field keeps the stored value, "
                       "null clears it.",
        "properties": {
            "email": {"$ref": "#/$defs/optional_string"},
            "first_name": {"$ref": "#/$defs/optional_string"},
            "last_name": {"$ref": "#/$defs/optional_string"},
            "phone": {"$ref": "#/$defs/optional_string"},
            "billing": {"$ref": "#/$defs/profile_address"},
            "shipping": {"$ref": "#/$defs/profile_address"},
            "campaign_id": {"$ref": "#/$defs/optional_string"},
            "affiliate_id": {"$ref": "#/$defs/optional_string"},
            "tags": _nullable({"type": "array", "items": {"type": "string"}}),
            "properties": _nullable({
                "type": "object",
                "description": "Custom properties: non-empty names, scalar values; integers "
                               "must fit in 64 bits (signed).",
                "propertyNames": {"minLength": 1},
                "additionalProperties": {
                    "type": ["string", "number", "boolean", "null"],
                    "if": {"type": "integer"},
                    "then": {"minimum": INT64_MIN, "maximum": INT64_MAX},
                },
            }),
        },
    }


def _product() -> Schema:
    return {
        "type": "object",
        "description": "One line of an order; every field optional.",
        "properties": {
            "product_id": {"$ref": "#/$defs/optional_string"},
            "category": {"$ref": "#/$defs/optional_string"},
            "quantity": {**_nullable({"type": "integer"}),
                         "description": "A JSON integer literal (`2`, not `2.0`)."},
            "price": {"$ref": "#/$defs/optional_money"},
        },
    }


def _data_schema(event_type: str) -> Schema:
    if event_type in ("prospect.created", "customer.created", "customer.updated"):
        data = _profile_data()
        if event_type == "customer.updated":
            data["description"] = "Only what changed. " + data["description"]
        return data
    if event_type == "customer.deleted":
        return {"type": "object", "description": "No fields: any object (`{}`)."}
    if event_type == "order.placed":
        return {
            "type": "object",
            "required": ["order_id", "total"],
            "properties": {
                "order_id": {"$ref": "#/$defs/id"},
                "total": {"$ref": "#/$defs/money"},
                "currency": {**_nullable({"type": "string"}),
                             "description": "ISO 4217 code, e.g. `USD`."},
                "products": _nullable({"type": "array", "items": _product()}),
                "campaign_id": {"$ref": "#/$defs/optional_string"},
                "affiliate_id": {"$ref": "#/$defs/optional_string"},
                "billing": {"$ref": "#/$defs/order_address"},
                "shipping": {"$ref": "#/$defs/order_address"},
            },
        }
    if event_type == "order.declined":
        return {
            "type": "object",
            "required": ["order_id"],
            "properties": {
                "order_id": {"$ref": "#/$defs/id"},
                "total": {"$ref": "#/$defs/optional_money"},
                "reason": {"$ref": "#/$defs/optional_string"},
            },
        }
    if event_type in ("order.refunded", "order.chargeback"):
        return {
            "type": "object",
            "required": ["order_id", "amount"],
            "properties": {
                "order_id": {"$ref": "#/$defs/id"},
                "amount": {"$ref": "#/$defs/money"},
            },
        }
    if event_type in ("subscription.started", "subscription.cancelled"):
        return {
            "type": "object",
            "required": ["subscription_id", "product_id"],
            "properties": {
                "subscription_id": {"$ref": "#/$defs/id"},
                "product_id": {"$ref": "#/$defs/id"},
            },
        }
    raise KeyError(event_type)


def _event_body(event_type: str) -> Schema:
    """One event type's schema, without the file-level keywords."""
    return {
        "type": "object",
        "required": ["event_id", "type", "occurred_at", "customer_id", "data"],
        "properties": {
            "event_id": _string("Unique per event; a repeated id changes nothing.",
                                min_length=1, max_length=128),
            "type": {"const": event_type},
            "occurred_at": {"$ref": "#/$defs/timestamp"},
            "customer_id": {**_string("The message key.", min_length=1)},
            "data": _data_schema(event_type),
        },
    }


def _file(name: str, title: str, description: str, body: Schema) -> Schema:
    return {"$schema": DIALECT, "$id": ID_BASE + name, "title": title,
            "description": description, **body}


def event_schema(event_type: str) -> Schema:
    topic = TOPIC_OF_TYPE[event_type]
    return _file(
        event_type, f"{event_type} event",
        f"Input event `{event_type}`, written to the `{topic}` topic keyed by "
        "`customer_id` (docs/events.md). Unknown extra fields are allowed and ignored.",
        {**_event_body(event_type), "$defs": _defs()},
    )


def envelope_schema() -> Schema:
    branches = {name: _event_body(name) for name in EVENT_TYPES}
    return _file(
        ENVELOPE, "segstream input event",
        "Any input event (docs/events.md): the envelope, and `data` according to `type`. "
        "Unknown extra fields are allowed and ignored; an unknown `type` is invalid.",
        {
            "type": "object",
            "required": ["event_id", "type", "occurred_at", "customer_id", "data"],
            "properties": {"type": {"enum": list(EVENT_TYPES)}},
            "oneOf": [{"$ref": f"#/$defs/{name}"} for name in EVENT_TYPES],
            "$defs": {**_defs(), **branches},
        },
    )


def membership_schema() -> Schema:
    return _file(
        MEMBERSHIP, "segment membership change",
        "A record of the `segment-membership` topic, keyed by `customer_id` (contract "
        "section 7). For each customer and segment, added and removed alternate. "
        "`segment.member_updated` says that the email of a current member was set or changed "
        "(`previous_email` is the one before, null when there was none); it takes no part in "
        "the alternation, and a consumer that tracks membership only may ignore it. A change "
        "may be delivered twice, always with the same `event_id`.",
        {
            "type": "object",
            "required": ["event_id", "type", "segment_id", "segment_version", "customer_id",
                         "email", "changed_at", "reason"],
            "properties": {
                "event_id": _string("Deterministic: the same change always has the same id.",
                                    min_length=1),
                "type": {"enum": ["segment.member_added", "segment.member_removed",
                                  "segment.member_updated"]},
                "segment_id": {"$ref": "#/$defs/id"},
                "segment_version": {"type": "integer", "minimum": 1,
                                    "description": "The definition version that decided."},
                "customer_id": {"$ref": "#/$defs/id"},
                "email": {**_nullable({"type": "string"}),
                          "description": "The member's email; null when it has none."},
                "previous_email": {
                    **_nullable({"type": "string"}),
                    "description": "`segment.member_updated` only: the email before the change; "
                                   "null when the member had none."},
                "changed_at": {"$ref": "#/$defs/timestamp"},
                "reason": {
                    "enum": ["event", "time", "backfill", "segment_deleted", "customer_deleted"],
                    "description": "`event`: an input event; `time`: a time-relative "
                                   "condition flipped; `backfill`: the segment was created or "
                                   "edited; `segment_deleted`; `customer_deleted`.",
                },
                "cause_event_id": _string("The input event that caused the change, when "
                                          "there is one.", min_length=1, max_length=128),
            },
            "$defs": {"id": _defs()["id"], "timestamp": _defs()["timestamp"]},
        },
    )


def build_schemas() -> dict[str, Schema]:
    """Every schema by name, in `NAMES` order."""
    schemas: dict[str, Schema] = {ENVELOPE: envelope_schema()}
    schemas.update((name, event_schema(name)) for name in EVENT_TYPES)
    schemas[MEMBERSHIP] = membership_schema()
    return schemas


def render(schema: Schema) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(__file__).parent
    stale = []
    for name, schema in build_schemas().items():
        path = directory / f"{name}.json"
        text = render(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
            if "--check" not in args:
                path.write_text(text, encoding="utf-8")
    if stale and "--check" in args:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
