"""The condition catalog: every field a segment can test, its type and operators.

One table drives validation (`definitions`), code generation (`compiler`) and
`GET /fields`. A field's type decides which operators it takes and what their
values look like; see `definitions` for the value shapes.

Text comparison: `text` fields (names, emails, places) compare case-insensitively
(both sides casefolded); `id` fields, set members, tags and custom properties
compare exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

TEXT_OPS: Final = (
    "eq", "neq", "in", "not_in", "contains", "starts_with", "ends_with", "exists", "not_exists",
)  # fmt: skip
ENUM_OPS: Final = ("eq", "neq", "in", "not_in")
NUMBER_OPS: Final = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "between")
OPTIONAL_NUMBER_OPS: Final = (*NUMBER_OPS, "exists", "not_exists")
DATETIME_OPS: Final = ("before", "after", "within_last", "not_within_last", "exists", "not_exists")
SET_OPS: Final = ("includes_any", "includes_all", "includes_none", "exists", "not_exists")
SEGMENT_OPS: Final = ("includes_any", "includes_all", "includes_none")
PROPERTY_OPS: Final = (
    "eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "between",
    "contains", "starts_with", "ends_with", "exists", "not_exists",
)  # fmt: skip

CONTACT_TYPES: Final = ("prospect", "customer")
PROPERTY_PREFIX: Final = "properties."


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One catalog entry.

    `type` is one of: enum, text, id, count, money, datetime, set, segments,
    property. `nullable` fields may be missing (conditions on a missing value
    are false except `not_exists`, `neq`, `not_in`, `includes_none`).
    """

    name: str
    type: str
    operators: tuple[str, ...]
    description: str
    nullable: bool = True
    windowed: bool = False

    @property
    def casefold(self) -> bool:
        """Whether string comparisons on this field ignore case."""
        return self.type == "text"

    def as_json(self) -> dict[str, Any]:
        """The `GET /fields` entry."""
        return {
            "field": self.name,
            "type": self.type,
            "operators": list(self.operators),
            "description": self.description,
            "within_days": self.windowed,
            "case_insensitive": self.casefold,
        }


def _text(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "text", TEXT_OPS, description)


def _id(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "id", TEXT_OPS, description)


def _count(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "count", NUMBER_OPS, description, nullable=False, windowed=True)


def _date(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "datetime", DATETIME_OPS, description)


def _set(name: str, description: str, windowed: bool = False) -> FieldSpec:
    return FieldSpec(name, "set", SET_OPS, description, nullable=False, windowed=windowed)


def _address(kind: str) -> list[FieldSpec]:
    return [
        _text(f"{kind}_country", f"{kind} country (ISO 3166-1 alpha-2)"),
        _text(f"{kind}_state", f"{kind} state or region"),
        _text(f"{kind}_city", f"{kind} city"),
        _text(f"{kind}_postal_code", f"{kind} postal code"),
    ]


_ADDRESS_NOTE: Final = "; from the profile, else from the latest order that had one"

FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec("contact_type", "enum", ENUM_OPS,
              "prospect until the first placed order, then customer", nullable=False),
    _text("email", "email address"),
    _text("email_domain", "the part of the email after @, lowercase"),
    _text("first_name", "first name"),
    _text("last_name", "last name"),
    _text("phone", "phone number as sent"),
    *(FieldSpec(f.name, f.type, f.operators, f.description + _ADDRESS_NOTE)
      for f in (*_address("billing"), *_address("shipping"))),
    _id("campaign_id", "campaign of the latest profile event or order that named one"),
    _id("affiliate_id", "affiliate of the latest profile event or order that named one"),
    _set("tags", "profile tags (exact match)"),
    _date("created_at", "first prospect/customer created event, else the earliest event"),
    _count("order_count", "placed orders (an order_id counts once)"),
    FieldSpec("total_spent", "money", NUMBER_OPS,
              "placed order totals minus refunds and chargebacks", nullable=False, windowed=True),
    FieldSpec("average_order_value", "money", OPTIONAL_NUMBER_OPS,
              "total_spent / order_count; missing without orders"),
    _date("first_order_at", "time of the earliest placed order"),
    _date("last_order_at", "time of the latest placed order"),
    FieldSpec("last_order_total", "money", OPTIONAL_NUMBER_OPS,
              "total of the latest placed order"),
    _set("products_purchased", "product ids of placed orders; with within_days, of the placed "
         "orders of the last N days", windowed=True),
    _set("categories_purchased", "categories of placed orders; with within_days, of the placed "
         "orders of the last N days", windowed=True),
    _count("decline_count", "declined orders"),
    _count("refund_count", "refunds"),
    FieldSpec("refunded_total", "money", NUMBER_OPS,
              "refunded plus charged-back amounts", nullable=False),
    _count("chargeback_count", "chargebacks"),
    _set("active_subscriptions", "product ids with an active subscription; with within_days, "
         "those started in the last N days", windowed=True),
    _set("cancelled_subscriptions", "product ids of subscriptions whose latest event is a cancel"),
    FieldSpec("segments", "segments", SEGMENT_OPS,
              "ids of the segments the customer is in", nullable=False),
)  # fmt: skip

PROPERTY_FIELD: Final = FieldSpec(
    "properties.<name>", "property", PROPERTY_OPS,
    "a custom property: text (exact match), number or true/false",
)  # fmt: skip

FIELD_BY_NAME: Final[dict[str, FieldSpec]] = {spec.name: spec for spec in FIELDS}

FIELD_CATALOG: Final[list[dict[str, Any]]] = [
    spec.as_json() for spec in (*FIELDS, PROPERTY_FIELD)
]
"""What `GET /fields` returns."""

CONTRACT_FIELDS: Final[tuple[str, ...]] = tuple(spec.name for spec in FIELDS)

ANY_FIELD: Final = "*"
"""In a changed-field set: anything may have changed, custom properties included."""

EVERY_FIELD: Final[frozenset[str]] = frozenset({*CONTRACT_FIELDS, ANY_FIELD} - {"segments"})
"""What `apply_event` reports for a customer's first event: every field came to be."""


def field_spec(name: str) -> FieldSpec | None:
    """The catalog entry for a condition's `field`, or None when there is none."""
    if name.startswith(PROPERTY_PREFIX) and len(name) > len(PROPERTY_PREFIX):
        return PROPERTY_FIELD
    return FIELD_BY_NAME.get(name)
