"""The domain's exceptions, and the mapping of msgspec messages onto stable codes.

Both errors are permanent (`retriable = False`): retrying the same input gives
the same answer, so callers send it to the dead-letter topic or answer 4xx.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

INVALID_EVENT_CODES: Final = (
    "invalid_json",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "invalid_value",
)

# msgspec messages end with " - at `$.path`" unless the problem is at the root.
_AT_PATH: Final = re.compile(r"^(?P<text>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING: Final = re.compile(r"^Object missing required field `(?P<field>[^`]*)`$")
_FIELD_PREFIX: Final = re.compile(r"^field `(?P<field>[^`]*)`: (?P<text>.*)$", re.DOTALL)


class InvalidEvent(ValueError):
    """An input event that cannot be applied: `code` is stable, `reason` is for people."""

    retriable = False

    def __init__(self, code: str, reason: str, path: str = "$") -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.path = path


class DefinitionError(ValueError):
    """A segment definition that breaks a rule; `details` lists every problem.

    Each detail is `{"path": "groups[1].conditions[0].value", "message": "..."}`,
    plus `"segment_id"` when the problem was found across several segments.
    """

    retriable = False

    def __init__(self, details: list[dict[str, str]]) -> None:
        summary = "; ".join(f"{d['path']}: {d['message']}" for d in details[:3])
        super().__init__(f"invalid segment definition: {summary}")
        self.details = details


def invalid_event_from(message: str, known_types: Iterable[str]) -> InvalidEvent:
    """Classify a msgspec ValidationError message into an `InvalidEvent`."""
    match = _AT_PATH.match(message)
    assert match is not None  # the pattern matches any string
    text, path = match["text"], match["path"] or "$"
    field = _FIELD_PREFIX.match(text)
    if field is not None:  # raised by a __post_init__ check on one field
        return InvalidEvent("invalid_value", f"{field['text']} at `{path}.{field['field']}`",
                            f"{path}.{field['field']}")
    missing = _MISSING.match(text)
    if missing is not None:
        full = f"{path}.{missing['field']}"
        return InvalidEvent("missing_field", f"missing required field `{full}`", full)
    if path == "$.type":
        return _type_problem(text, known_types)
    code = "wrong_type" if ", got `" in text else "invalid_value"
    return InvalidEvent(code, f"{text} at `{path}`", path)


def _type_problem(text: str, known_types: Iterable[str]) -> InvalidEvent:
    if not text.startswith("Invalid value"):
        return InvalidEvent("wrong_type", f"{text} at `$.type`", "$.type")
    value = text.removeprefix("Invalid value").strip()
    known = ", ".join(known_types)
    return InvalidEvent("unknown_type", f"unknown event type {value} at `$.type`; "
                        f"known types: {known}", "$.type")
