"""JSON Schemas (draft 2020-12) of what producers write and consumers read.

`event` validates any input event (a `oneOf` over the event types, picked by `type`);
each event type has its own schema under its type name (`order.placed`, ...);
`membership` validates the records of `segment-membership`. The JSON files ship in
the package; `streams/schemas/generate.py` is their source.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from segments.events import EVENT_TYPES

__all__ = ["SCHEMA_NAMES", "all_schemas", "load_schema"]

SCHEMA_NAMES: tuple[str, ...] = ("event", *EVENT_TYPES, "membership")


@cache
def _text(name: str) -> str:
    if name not in SCHEMA_NAMES:
        known = ", ".join(SCHEMA_NAMES)
        raise KeyError(f"no schema named {name!r}; known: {known}")
    return resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of one schema; `KeyError` for an unknown name."""
    schema: dict[str, Any] = json.loads(_text(name))
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by name."""
    return {name: load_schema(name) for name in SCHEMA_NAMES}
