"""`SegmentIndex`: all live segments, compiled, evaluated incrementally per event.

For a set of changed fields, only the segments that read one of them, the
time-relative ones (`within_last`, `not_within_last`, `within_days`) and,
transitively, the segments building on any of those are re-evaluated; every
other bit is copied from `state.segments_mask`. The generated function for each
distinct changed set is cached, so the steady state is one dict lookup and one
call per event.

`evaluate` copies the bits of slots that belong to no definition in the index
(a deleted segment stays set until the runtime handles it); `evaluate_all`
computes from scratch and returns live slots only, so it drops such bits.

`next_change` says when a customer's memberships can next change with time alone
(`segments.schedule`); `horizon_ms` is how much history the segments' windows need.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from segments.catalog import ANY_FIELD
from segments.compiler import (
    Evaluate,
    Explain,
    NextChange,
    compile_evaluator,
    compile_explainer,
    compile_next_change,
)
from segments.definitions import SegmentDefinition, check_graph
from segments.errors import DefinitionError
from segments.events import CustomerDeleted, Event
from segments.features import FeatureState, apply_event, new_state
from segments.schedule import TimeChange, time_changes, trigger_fields

NO_CHANGE: Final[frozenset[str]] = frozenset()
"""A changed set naming no field: only time moved (time-relative segments and those building on
them are evaluated)."""

MAX_CACHED_FUNCTIONS: Final = 4096


class SegmentIndex:
    """Compiled, topologically ordered segment definitions."""

    def __init__(self, defs: Iterable[SegmentDefinition]) -> None:
        definitions = list(defs)
        self.by_id: dict[str, SegmentDefinition] = {d.id: d for d in definitions}
        self.slots: dict[int, SegmentDefinition] = {d.slot: d for d in definitions}
        _check_unique(definitions, self.by_id, self.slots)
        check_graph(self.by_id)
        self.order: list[SegmentDefinition] = _topological(definitions)
        self.mask: int = sum(1 << d.slot for d in definitions)
        self._bits = {d.id: 1 << d.slot for d in definitions}
        self._readers = _readers(definitions)
        self._dependents = _dependents(definitions)
        self._time_relative = frozenset(d.id for d in definitions if d.time_relative)
        self._cache: dict[frozenset[str], Evaluate] = {}
        self._compiled: dict[tuple[int, ...], Evaluate] = {}  # by the slots it evaluates
        self._all = compile_evaluator(self.order, self._bits)
        self._explainers: dict[str, Explain] = {}
        self.horizon_ms: int = max((d.window_ms for d in definitions), default=0)
        """History windows need: timelines and purchase times are kept this long before now."""
        triggers = {name for d in definitions if d.time_relative for group in d.groups
                    for c in group if c.time_relative for name in trigger_fields(c)}
        self.time_fields: frozenset[str] = frozenset({ANY_FIELD, *triggers} if triggers else ())
        """Changed fields after which a customer's next time change must be computed again
        (`ANY_FIELD` too); empty when no segment is time-relative."""
        self._next_change: NextChange | None = None

    def evaluate(self, state: FeatureState, now_ms: int, changed: frozenset[str]) -> int:
        """The new membership mask after `changed` fields changed; state is not modified.

        `changed` holding "*" (`catalog.ANY_FIELD`) re-evaluates every segment.
        """
        function = self._cache.get(changed)
        if function is None:
            function = self._compile_for(changed)
        return function(state, now_ms, state.segments_mask)

    def next_change(self, state: FeatureState, now_ms: int) -> int | None:
        """The first instant after `now_ms` at which a segment's result can change with time
        alone (evaluate again then, with `NO_CHANGE`); None when none can until an event."""
        function = self._next_change
        if function is None:
            function = self._next_change = compile_next_change(
                d for d in self.order if d.time_relative)
        return function(state, now_ms)

    def time_changes(self, state: FeatureState, now_ms: int) -> list[TimeChange]:
        """Each time-relative condition's next change, earliest first (`next_change` is the
        first one's instant): which condition a customer's timer is for."""
        return time_changes(self.order, state, now_ms)

    def evaluate_all(self, state: FeatureState, now_ms: int) -> int:
        """The membership mask from scratch: every segment evaluated, live slots only."""
        return self._all(state, now_ms, 0)

    def affected(self, changed: Iterable[str]) -> list[SegmentDefinition]:
        """Segments to re-evaluate for `changed`, in evaluation order."""
        if ANY_FIELD in changed:
            return list(self.order)
        ids = set(self._time_relative)
        for name in changed:
            ids.update(self._readers.get(name, ()))
        pending = list(ids)
        while pending:
            for dependent in self._dependents.get(pending.pop(), ()):
                if dependent not in ids:
                    ids.add(dependent)
                    pending.append(dependent)
        return [d for d in self.order if d.id in ids]

    def explain(self, state: FeatureState, now_ms: int, segment_id: str) -> list[list[bool]]:
        """Each condition's result for this state, group by group (KeyError if unknown)."""
        definition = self.by_id[segment_id]
        explainer = self._explainers.get(segment_id)
        if explainer is None:
            explainer = self._explainers[segment_id] = compile_explainer(definition, self._bits)
        return explainer(state, now_ms, self.evaluate_all(state, now_ms))

    def _compile_for(self, changed: frozenset[str]) -> Evaluate:
        """Many changed sets select the same segments: compile once per selection."""
        if len(self._cache) >= MAX_CACHED_FUNCTIONS:
            self._cache.clear()
            self._compiled.clear()
        affected = self.affected(changed)
        key = tuple(d.slot for d in affected)
        function = self._compiled.get(key)
        if function is None:
            function = self._compiled[key] = compile_evaluator(affected, self._bits)
        self._cache[changed] = function
        return function


def _check_unique(
    definitions: list[SegmentDefinition],
    by_id: dict[str, SegmentDefinition],
    slots: dict[int, SegmentDefinition],
) -> None:
    details = []
    if len(by_id) != len(definitions):
        details.append({"path": "id", "message": "two definitions have the same id"})
    if len(slots) != len(definitions) or any(d.slot < 0 for d in definitions):
        details.append({"path": "slot", "message": "slots must be distinct and not negative"})
    if details:
        raise DefinitionError(details)


def _readers(definitions: list[SegmentDefinition]) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {}
    for d in definitions:
        for name in d.reads:
            readers.setdefault(name, []).append(d.id)
    return readers


def _dependents(definitions: list[SegmentDefinition]) -> dict[str, list[str]]:
    dependents: dict[str, list[str]] = {}
    for d in definitions:
        for ref in d.refs:
            dependents.setdefault(ref, []).append(d.id)
    return dependents


def _topological(definitions: list[SegmentDefinition]) -> list[SegmentDefinition]:
    """Referenced segments first; among independent ones, by slot."""
    by_id = {d.id: d for d in definitions}
    waiting = {d.id: len(d.refs) for d in definitions}
    dependents = _dependents(definitions)
    ready = sorted((d for d in definitions if not d.refs), key=lambda d: d.slot, reverse=True)
    order: list[SegmentDefinition] = []
    while ready:
        current = ready.pop()
        order.append(current)
        for dependent in dependents.get(current.id, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(by_id[dependent])
                ready.sort(key=lambda d: d.slot, reverse=True)
    return order


def recompute(events: Iterable[Event], now_ms: int, index: SegmentIndex) -> FeatureState:
    """The oracle: a fresh state with all `events` applied in order, mask from scratch.

    A `customer.deleted` erases the state, as the runtime does.
    """
    state = new_state()
    for ev in events:
        if isinstance(ev, CustomerDeleted):
            state = new_state()
        else:
            apply_event(state, ev, now_ms, index.horizon_ms)
    state.segments_mask = index.evaluate_all(state, now_ms)
    return state
