"""Segment definitions (contract section 5): validation into typed conditions.

`parse_definition` checks a JSON body against `catalog.FIELDS` and returns a
frozen `SegmentDefinition` whose condition values are already normalized for
evaluation (casefolded text, money in units, times in epoch ms, durations in
ms, lists as frozensets). Every problem is collected, each with its path, into
one `DefinitionError`; nothing stops at the first.

Rules: groups are ORed, conditions in a group ANDed; 1..9 conditions in all,
at most 5 groups, no empty group. `check_graph` validates segment-of-segment
references across all definitions (unknown ids, cycles).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from segments.catalog import FIELD_CATALOG, PROPERTY_PREFIX, FieldSpec, field_spec
from segments.errors import DefinitionError
from segments.timeline import DAY_MS, TIMELINE_HORIZON_DAYS
from segments.values import Ago, InvalidValue, parse_value

MAX_GROUPS: Final = 5
MAX_CONDITIONS: Final = 9
MAX_NAME_LENGTH: Final = 200
TIME_OPS: Final = frozenset({"within_last", "not_within_last"})
_CONDITION_KEYS: Final = frozenset({"field", "op", "value", "within_days"})
__all__ = [
    "FIELD_CATALOG",
    "MAX_CONDITIONS",
    "MAX_GROUPS",
    "Condition",
    "DefinitionError",
    "SegmentDefinition",
    "check_graph",
    "find_cycles",
    "parse_definition",
]

_WINDOWED_NAMES: Final = (
    "order_count, total_spent, decline_count, refund_count, chargeback_count, "
    "products_purchased, categories_purchased and active_subscriptions"
)

Details = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class Condition:
    """One validated condition; `value` is normalized (see module doc)."""

    field: str
    op: str
    value: Any
    type: str
    within_days: int | None = None

    @property
    def property_name(self) -> str | None:
        """`plan` for `properties.plan`, else None."""
        return self.field.removeprefix(PROPERTY_PREFIX) if self.type == "property" else None

    @property
    def time_relative(self) -> bool:
        """Whether the result can change with time alone."""
        return (self.op in TIME_OPS or self.within_days is not None
                or isinstance(self.value, Ago))

    @property
    def window_ms(self) -> int | None:
        """How far back the condition looks at kept history (timelines, purchase times)."""
        return None if self.within_days is None else self.within_days * DAY_MS


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """A validated segment. `slot` is its bit in membership masks."""

    id: str
    name: str
    version: int
    slot: int
    groups: tuple[tuple[Condition, ...], ...]
    auto_responder: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    updated_ms: int | None = None
    """When this version was stored (epoch ms), once it is."""
    reads: frozenset[str] = field(init=False)
    """Fields read, other than `segments`."""
    refs: frozenset[str] = field(init=False)
    """Ids of segments this one builds on."""
    time_relative: bool = field(init=False)
    window_ms: int = field(init=False)
    """The longest `within_days` window of its conditions in ms (0: none): how much history
    a customer must keep for this segment."""

    def __post_init__(self) -> None:
        conditions = [c for group in self.groups for c in group]
        refs = {ref for c in conditions if c.field == "segments" for ref in c.value}
        object.__setattr__(self, "refs", frozenset(refs))
        reads = {c.field for c in conditions if c.field != "segments"}
        object.__setattr__(self, "reads", frozenset(reads))
        object.__setattr__(self, "time_relative", any(c.time_relative for c in conditions))
        object.__setattr__(self, "window_ms", max((c.window_ms or 0 for c in conditions),
                                                  default=0))

    def conditions_with_paths(self) -> Iterator[tuple[str, Condition]]:
        """Each condition with its path, e.g. `groups[1].conditions[0]`."""
        for g, group in enumerate(self.groups):
            for c, condition in enumerate(group):
                yield f"groups[{g}].conditions[{c}]", condition


def parse_definition(
    body: Any, *, segment_id: str, version: int, slot: int
) -> SegmentDefinition:
    """Validate a definition body; raise DefinitionError listing every problem."""
    details: Details = []
    if not isinstance(body, dict):
        raise DefinitionError([_detail("", "a segment definition must be a JSON object")])
    name = _parse_name(body.get("name"), details)
    groups = _parse_groups(body.get("groups"), details)
    responder = _parse_auto_responder(body.get("auto_responder"), details)
    _check_self_reference(groups, segment_id, details)
    if details:
        raise DefinitionError(details)
    return SegmentDefinition(segment_id, name, version, slot, groups, responder, body)


def _detail(path: str, message: str) -> dict[str, str]:
    return {"path": path, "message": message}


def _parse_name(name: Any, details: Details) -> str:
    if not isinstance(name, str) or not name.strip():
        details.append(_detail("name", "a segment needs a name (non-empty text)"))
        return ""
    if len(name) > MAX_NAME_LENGTH:
        details.append(_detail("name", f"the name is longer than {MAX_NAME_LENGTH} characters"))
    return name


def _parse_auto_responder(value: Any, details: Details) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        details.append(_detail("auto_responder", "must be an object with `profile_id` and "
                                                 "`list_id` (and optionally `segment_id`)"))
        return None
    for key in ("profile_id", "list_id"):
        if not isinstance(value.get(key), str) or not value[key]:
            details.append(_detail(f"auto_responder.{key}", f"`{key}` is required (an id)"))
    segment = value.get("segment_id")
    if segment is not None and (not isinstance(segment, str) or not segment):
        details.append(_detail("auto_responder.segment_id", "must be an id, or left out"))
    return value


def _parse_groups(groups: Any, details: Details) -> tuple[tuple[Condition, ...], ...]:
    if not isinstance(groups, list):
        details.append(_detail("groups", 'a segment needs `groups`: a list of '
                                         '{"conditions": [...]} objects'))
        return ()
    if len(groups) > MAX_GROUPS:
        details.append(_detail("groups", f"a segment has at most {MAX_GROUPS} groups; "
                                         f"this one has {len(groups)}"))
    parsed = tuple(_parse_group(g, f"groups[{i}]", details) for i, g in enumerate(groups))
    _check_condition_count(groups, details)
    return parsed


def _check_condition_count(groups: list[Any], details: Details) -> None:
    total = sum(len(g["conditions"]) for g in groups
                if isinstance(g, dict) and isinstance(g.get("conditions"), list))
    if total > MAX_CONDITIONS:
        details.append(_detail("groups", f"a segment has at most {MAX_CONDITIONS} conditions "
                                         f"in all; this one has {total}"))
    elif not groups:
        details.append(_detail("groups", "a segment needs at least one condition"))


def _parse_group(group: Any, path: str, details: Details) -> tuple[Condition, ...]:
    if not isinstance(group, dict) or not isinstance(group.get("conditions"), list):
        details.append(_detail(path, 'a group must be an object {"conditions": [...]}'))
        return ()
    for key in sorted(set(group) - {"conditions"}):
        details.append(_detail(f"{path}.{key}", f"unknown key `{key}`; a group only has "
                                                "`conditions`"))
    conditions = group["conditions"]
    if not conditions:
        details.append(_detail(f"{path}.conditions", "a group needs at least one condition"))
    parsed = (_parse_condition(c, f"{path}.conditions[{i}]", details)
              for i, c in enumerate(conditions))
    return tuple(c for c in parsed if c is not None)


def _parse_condition(raw: Any, path: str, details: Details) -> Condition | None:
    if not isinstance(raw, dict):
        details.append(_detail(path, 'a condition must be an object like '
                                     '{"field": "order_count", "op": "gte", "value": 2}'))
        return None
    before = len(details)
    for key in sorted(set(raw) - _CONDITION_KEYS):
        details.append(_detail(f"{path}.{key}", f"unknown key `{key}`; a condition has "
                                                "`field`, `op`, `value` and `within_days`"))
    spec = _parse_field(raw.get("field"), path, details)
    op = _parse_op(raw.get("op"), spec, path, details) if spec else None
    if spec is None or op is None:
        return None
    value = _parse_condition_value(raw, spec, op, path, details)
    within_days = _parse_within_days(raw.get("within_days"), spec, op, path, details)
    if len(details) != before:
        return None
    return Condition(str(raw["field"]), op, value, spec.type, within_days)


def _parse_field(name: Any, path: str, details: Details) -> FieldSpec | None:
    if not isinstance(name, str):
        details.append(_detail(f"{path}.field", "every condition needs a `field` "
                                                "(GET /fields lists them)"))
        return None
    spec = field_spec(name)
    if spec is None:
        hint = " (custom properties are `properties.<name>`)" if "." in name else ""
        details.append(_detail(f"{path}.field", f"`{name}` is not a field{hint}; "
                                                "GET /fields lists them"))
    return spec


def _parse_op(op: Any, spec: FieldSpec, path: str, details: Details) -> str | None:
    if isinstance(op, str) and op in spec.operators:
        return op
    allowed = ", ".join(spec.operators)
    if not isinstance(op, str):
        message = f"every condition needs an `op`; for this field one of: {allowed}"
    else:
        message = f"`{op}` does not work on `{spec.name}`; it takes: {allowed}"
    details.append(_detail(f"{path}.op", message))
    return None


def _parse_condition_value(
    raw: dict[str, Any], spec: FieldSpec, op: str, path: str, details: Details
) -> Any:
    try:
        return parse_value(spec, op, raw.get("value"), "value" in raw)
    except InvalidValue as exc:
        details.append(_detail(f"{path}.value", str(exc)))
        return None


def _parse_within_days(
    days: Any, spec: FieldSpec, op: str, path: str, details: Details
) -> int | None:
    if days is None:
        return None
    problem = None
    if not spec.windowed:
        problem = f"`within_days` only works on {_WINDOWED_NAMES}"
    elif type(days) is not int or not 1 <= days <= TIMELINE_HORIZON_DAYS:
        problem = f"`within_days` must be a whole number of days from 1 to {TIMELINE_HORIZON_DAYS}"
    if problem is not None:
        details.append(_detail(f"{path}.within_days", problem))
        return None
    return int(days)


def _check_self_reference(
    groups: tuple[tuple[Condition, ...], ...], segment_id: str, details: Details
) -> None:
    for g, group in enumerate(groups):
        for c, condition in enumerate(group):
            if condition.field == "segments" and segment_id in condition.value:
                path = f"groups[{g}].conditions[{c}].value"
                details.append(_detail(path, "a segment cannot build on itself"))


def check_graph(defs: Mapping[str, SegmentDefinition]) -> None:
    """Raise DefinitionError when a segment refers to an unknown segment or a cycle exists."""
    details = [*_unknown_refs(defs), *_cycles(defs)]
    if details:
        raise DefinitionError(details)


def _ref_paths(definition: SegmentDefinition) -> Iterator[tuple[str, str]]:
    """(path of the value, referenced id) for each segment reference."""
    for path, condition in definition.conditions_with_paths():
        if condition.field == "segments":
            for ref in sorted(condition.value):
                yield f"{path}.value", ref


def _unknown_refs(defs: Mapping[str, SegmentDefinition]) -> Iterator[dict[str, str]]:
    for seg_id, definition in defs.items():
        for path, ref in _ref_paths(definition):
            if ref not in defs:
                yield {"segment_id": seg_id, "path": path,
                       "message": f"segment `{ref}` does not exist"}


def _cycles(defs: Mapping[str, SegmentDefinition]) -> Iterator[dict[str, str]]:
    """One detail per segment on a cycle, naming the whole cycle."""
    for cycle in find_cycles({k: d.refs & defs.keys() for k, d in defs.items()}):
        loop = " → ".join(f"`{s}`" for s in (*cycle, cycle[0]))
        for here, nxt in zip(cycle, (*cycle[1:], cycle[0]), strict=True):
            path = next(p for p, ref in _ref_paths(defs[here]) if ref == nxt)
            yield {"segment_id": here, "path": path,
                   "message": f"segments build on each other in a cycle: {loop}"}


def find_cycles(graph: Mapping[str, frozenset[str]]) -> list[tuple[str, ...]]:
    """Elementary cycles found by an iterative depth-first search, one per back edge."""
    done: set[str] = set()
    found: list[tuple[str, ...]] = []
    for root in sorted(graph):
        if root not in done:
            found.extend(_cycles_from(root, graph, done))
    return found


def _cycles_from(
    root: str, graph: Mapping[str, frozenset[str]], done: set[str]
) -> Iterator[tuple[str, ...]]:
    path: list[str] = [root]
    on_path = {root}
    pending = [iter(sorted(graph.get(root, ())))]
    while pending:
        nxt = next(pending[-1], None)
        if nxt is None:
            finished = path.pop()
            on_path.discard(finished)
            done.add(finished)
            pending.pop()
            continue
        if nxt in on_path:
            yield tuple(path[path.index(nxt):])
        elif nxt not in done:
            path.append(nxt)
            on_path.add(nxt)
            pending.append(iter(sorted(graph.get(nxt, ()))))
