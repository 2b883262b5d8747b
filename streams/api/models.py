"""The request bodies of the API (contract section 6), as the OpenAPI document describes them.

The models check a body's shape: its keys (an unknown one is a 422 naming it, so a typo such
as `auto_responer` is not silently dropped), which are required, and their kinds. What the
values mean stays with the domain validators, which name every problem at once by path:
`parse_definition` judges a segment's conditions, `validated_profile` a profile's provider and
credentials, `decode_event` each event. The schemas written out here document what those
validators accept; they do not judge.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final

from pydantic import Field, StrictBool, WithJsonSchema

from providers.registry import PROVIDERS
from segments.catalog import (
    DATETIME_OPS,
    NUMBER_OPS,
    PROPERTY_OPS,
    SEGMENT_OPS,
    SET_OPS,
    TEXT_OPS,
)
from segments.definitions import MAX_CONDITIONS, MAX_GROUPS, MAX_NAME_LENGTH
from segments.events import EVENT_TYPES
from streams.api.body import RequestBody

SEGMENT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_EVENTS: Final = 1000

_OPERATORS: Final = sorted({*TEXT_OPS, *NUMBER_OPS, *DATETIME_OPS, *SET_OPS, *SEGMENT_OPS,
                            *PROPERTY_OPS})
_CONDITION_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["field", "op"],
    "properties": {
        "field": {"type": "string", "description": "a field of GET /fields"},
        "op": {"type": "string", "enum": _OPERATORS},
        "value": {},
        "within_days": {"type": "integer", "minimum": 1},
    },
}
_GROUPS_SCHEMA: Final[dict[str, Any]] = {
    "type": "array", "minItems": 1, "maxItems": MAX_GROUPS,
    "description": f"a customer matches when every condition of one group holds; at most "
                   f"{MAX_CONDITIONS} conditions in all",
    "items": {"type": "object", "required": ["conditions"], "properties": {
        "conditions": {"type": "array", "minItems": 1, "maxItems": MAX_CONDITIONS,
                       "items": _CONDITION_SCHEMA}}},
}
_EVENT_SCHEMA: Final[dict[str, Any]] = {
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
_EVENTS_SCHEMA: Final[dict[str, Any]] = {
    "description": "one event or a list (docs/events.md)",
    "oneOf": [_EVENT_SCHEMA, {"type": "array", "items": _EVENT_SCHEMA, "maxItems": MAX_EVENTS}],
}

Groups = Annotated[list[Any], WithJsonSchema(_GROUPS_SCHEMA)]
Events = Annotated[Any, WithJsonSchema(_EVENTS_SCHEMA)]
"""One event or a list; `decode_event` judges each, so one bad event is reported by index."""


class AutoResponderIn(RequestBody):
    """Where a segment's members are kept: a list of a profile, and a segment or tag in it."""

    profile_id: str = Field(description="an auto-responder profile (POST /providers/profiles)")
    list_id: str = Field(description="a list of the profile's last sync")
    segment_id: str | None = Field(None, description="a segment or tag of that list (needed "
                                                     "for ActiveCampaign)")


class SegmentIn(RequestBody):
    """A segment definition (docs/segments.md)."""

    invalid_code: ClassVar[str] = "invalid_definition"

    id: str | None = Field(None, pattern=SEGMENT_ID_PATTERN, description=(
        "1 to 100 letters, digits, `_`, `.` or `-`, starting with a letter or digit; "
        "POST makes one from the name when left out"))
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    groups: Groups
    auto_responder: AutoResponderIn | None = None

    def definition(self) -> dict[str, Any]:
        """The definition as sent, without `id`: what `parse_definition` judges and what is
        stored (and answered back)."""
        return self.model_dump(exclude_unset=True, exclude={"id"})


class ProfileIn(RequestBody):
    """An auto-responder profile: one provider account."""

    invalid_code: ClassVar[str] = "invalid_profile"

    name: str
    provider: str = Field(json_schema_extra={"enum": list(PROVIDERS)})
    credentials: dict[str, str] = Field(description=(
        'Mailchimp {"api_key": "<key>-<dc>"} or {"access_token", "dc"}; ActiveCampaign '
        '{"api_url", "api_key"}; Sendlane {"api_token"}'))
    base_url: str | None = Field(None, description="replaces the provider's API root")


class ReconcileIn(RequestBody):
    """Make a segment's list, segment or tag at the provider hold exactly its members."""

    invalid_code: ClassVar[str] = "invalid_reconcile"

    segment_id: str = Field(min_length=1)
    dry_run: StrictBool = Field(False, description="answer what would change, change nothing")
