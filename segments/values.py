"""Condition values: the shape each operator needs, checked and normalized.

Each operator has a shape (one scalar, a list, a number, a range, a substring,
nothing, set members, a duration or a moment); each field type says what its
scalars are. `parse_value` combines the two and returns the normalized value:

| shape     | operators                          | normalized to |
|-----------|------------------------------------|---------------|
| one       | eq, neq                            | scalar |
| many      | in, not_in                         | frozenset of scalars |
| number    | gt, gte, lt, lte                   | int (money in units) or float |
| range     | between                            | (low, high), inclusive |
| substring | contains, starts_with, ends_with   | str |
| nothing   | exists, not_exists                 | None |
| members   | includes_any/all/none              | frozenset of str |
| duration  | within_last, not_within_last       | int ms |
| moment    | before, after                      | int epoch ms, or `Ago` for a relative one |

`before`/`after` take a date (an absolute moment) or a duration (`{"days": N}`, a moment that
moves with now): `after {"days": 30}` holds while the time is at most 30 days old, like
`within_last`; `before {"days": 30}` once it is older, like `not_within_last`. Both are false on
a missing time.

Text-field strings are casefolded here, so evaluation only folds the state side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final

import msgspec

from segments.catalog import CONTACT_TYPES, FieldSpec
from segments.money import money_from_json
from segments.timeline import DAY_MS, HOUR_MS

MAX_LIST_ITEMS: Final = 1000
MAX_DAYS: Final = 3650
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class InvalidValue(ValueError):
    """A condition value of the wrong shape; the message is for a marketer."""


@dataclass(frozen=True, slots=True)
class Ago:
    """A relative moment: `duration_ms` before now, wherever now is."""

    duration_ms: int


_OP_SHAPE: Final = {
    "eq": "one", "neq": "one", "in": "many", "not_in": "many",
    "gt": "number", "gte": "number", "lt": "number", "lte": "number", "between": "range",
    "contains": "substring", "starts_with": "substring", "ends_with": "substring",
    "exists": "nothing", "not_exists": "nothing",
    "includes_any": "members", "includes_all": "members", "includes_none": "members",
    "within_last": "duration", "not_within_last": "duration",
    "before": "moment", "after": "moment",
}  # fmt: skip

_SCALAR_WORDS: Final = {
    "text": "a non-empty text",
    "id": "a non-empty id (text)",
    "enum": "`prospect` or `customer`",
    "count": "a whole number, 0 or more",
    "money": 'an amount such as 50 or "49.99"',
    "property": "a text, a number or true/false",
}


def parse_value(spec: FieldSpec, op: str, value: Any, present: bool) -> Any:
    """Check `value` for `op` on a field of `spec`'s type; return it normalized."""
    shape = _OP_SHAPE[op]
    if shape != "nothing" and not present:
        raise InvalidValue(f"`{op}` needs a `value`")
    return _SHAPES[shape](spec, op, value)


def _one(spec: FieldSpec, op: str, value: Any) -> Any:
    scalar = _scalar(spec.type, value)
    if scalar is None:
        raise InvalidValue(f"`{op}` on `{spec.name}` needs {_SCALAR_WORDS[spec.type]}")
    return scalar


def _many(spec: FieldSpec, op: str, value: Any) -> frozenset[Any]:
    words = _SCALAR_WORDS[spec.type]
    message = f"`{op}` on `{spec.name}` needs a non-empty list, each item {words}"
    items = _list_of(value, message)
    scalars = [_scalar(spec.type, item) for item in items]
    if any(s is None for s in scalars):
        raise InvalidValue(message)
    return frozenset(scalars)


def _list_of(value: Any, message: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise InvalidValue(message)
    if len(value) > MAX_LIST_ITEMS:
        raise InvalidValue(f"a list may hold at most {MAX_LIST_ITEMS} items")
    return value


def _scalar(field_type: str, value: Any) -> Any:
    """The normalized scalar, or None when `value` is not one for this type."""
    if field_type in ("text", "id", "enum"):
        return _text_scalar(field_type, value)
    if field_type == "property":
        return property_key(value)
    return _number(field_type, value)


PropertyKey = tuple[str, str | int | float | bool]


def property_key(value: object) -> PropertyKey | None:
    """A property value tagged with its kind, so that 1, 1.0 and true are told apart
    correctly: ("n", 1) == ("n", 1.0) but ("b", True) differs. None for anything else."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _text_scalar(field_type: str, value: Any) -> str | None:
    if not isinstance(value, str) or not value:  # never empty: "" stands for missing
        return None
    if field_type == "enum":
        folded = value.casefold()
        return folded if folded in CONTACT_TYPES else None
    return value.casefold() if field_type == "text" else value


def _number(field_type: str, value: Any) -> int | float | None:
    if field_type == "money":
        try:
            return money_from_json(value)
        except ValueError:
            return None
    if field_type == "count":
        return value if type(value) is int and value >= 0 else None
    return value if type(value) in (int, float) else None


def _number_value(spec: FieldSpec, op: str, value: Any) -> int | float:
    if spec.type == "property":
        number = _number("property", value)
        words = "a number"
    else:
        number, words = _number(spec.type, value), _SCALAR_WORDS[spec.type]
    if number is None:
        raise InvalidValue(f"`{op}` on `{spec.name}` needs {words}")
    return number


def _range(spec: FieldSpec, op: str, value: Any) -> tuple[int | float, int | float]:
    message = "`between` needs two numbers, low first, e.g. [10, 100]"
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidValue(message)
    low, high = (_number("property" if spec.type == "property" else spec.type, v) for v in value)
    if low is None or high is None:
        raise InvalidValue(message)
    if low > high:
        raise InvalidValue(f"{message}; {value[0]} is above {value[1]}")
    return (low, high)


def _substring(spec: FieldSpec, op: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"`{op}` needs a non-empty text")
    return value.casefold() if spec.casefold else value


def _nothing(spec: FieldSpec, op: str, value: Any) -> None:
    if value is not None:
        raise InvalidValue(f"`{op}` takes no value; leave `value` out")


def _members(spec: FieldSpec, op: str, value: Any) -> frozenset[str]:
    what = "segment ids" if spec.type == "segments" else "texts"
    message = f"`{op}` needs a non-empty list of {what}"
    items = _list_of(value, message)
    if not all(isinstance(item, str) and item for item in items):
        raise InvalidValue(message)
    return frozenset(items)


def _duration(spec: FieldSpec, op: str, value: Any) -> int:
    message = (f'`{op}` needs {{"days": N}} (1 to {MAX_DAYS}) '
               f'or {{"hours": N}} (1 to {MAX_DAYS * 24}), N a whole number')
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidValue(message)
    (unit, amount), = value.items()
    limit, unit_ms = {"days": (MAX_DAYS, DAY_MS), "hours": (MAX_DAYS * 24, HOUR_MS)}.get(
        unit, (0, 0))
    if type(amount) is not int or not 1 <= amount <= limit:
        raise InvalidValue(message)
    return amount * unit_ms


def _moment(spec: FieldSpec, op: str, value: Any) -> int | Ago:
    message = (f'`{op}` needs a date such as "2026-01-31", a date-time with a time zone '
               'such as "2026-01-31T09:00:00Z", or a time before now such as {"days": 30}')
    if isinstance(value, dict):
        try:
            return Ago(_duration(spec, op, value))
        except InvalidValue:
            raise InvalidValue(message) from None
    if not isinstance(value, str):
        raise InvalidValue(message)
    try:
        if len(value) == 10:
            day = msgspec.convert(value, date)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
        else:
            moment = msgspec.convert(value, _AwareDatetime)
    except msgspec.ValidationError:
        raise InvalidValue(message) from None
    return (moment - _EPOCH) // timedelta(milliseconds=1)


_SHAPES: Final[dict[str, Callable[[FieldSpec, str, Any], Any]]] = {
    "one": _one,
    "many": _many,
    "number": _number_value,
    "range": _range,
    "substring": _substring,
    "nothing": _nothing,
    "members": _members,
    "duration": _duration,
    "moment": _moment,
}
