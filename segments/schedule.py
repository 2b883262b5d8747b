"""When a customer's memberships can next change with time alone.

A time-relative condition compares a time of the state with a cutoff that moves with now
(`within_last`, `not_within_last`, relative `before`/`after`), or counts what lies inside a
window ending now (`within_days`). For a given state, each such condition's operand stays the
same until a known instant, and changes there:

- a time `x` against `now - d` (`x >= now - d` or its negation): at `x + d + 1`, if that is
  still ahead; a missing time never changes;
- a window of `W` over times `t` (timelines, latest purchase times, subscription starts): at
  `t + W + 1` for the oldest `t` inside the window (`t >= now - W`), when it leaves it.

Nothing else in an evaluation depends on now. So between now and the earliest of these instants
every segment keeps its result, and at that instant one operand changes (the result may or may
not). That instant is the customer's next re-evaluation: one timer per customer. Segments built
on time-relative segments need no instant of their own: they are re-evaluated with them.

`time_changes` lists each condition's instant with its segment and path (what the API shows);
the engine uses the generated `compiler.compile_next_change`, which must give their minimum.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from segments.definitions import Condition, SegmentDefinition
from segments.state import FeatureState
from segments.values import Ago

WINDOW_TIMELINES: Final = {
    "order_count": ("orders",),
    "decline_count": ("declines",),
    "refund_count": ("refunds",),
    "chargeback_count": ("chargebacks",),
    "total_spent": ("orders", "refunds", "chargebacks"),
}
"""The timelines a windowed count or sum reads."""
WINDOW_TIMES: Final = {"products_purchased": "product_times",
                       "categories_purchased": "category_times"}
"""The latest-purchase times a windowed set reads (`active_subscriptions` reads the
subscriptions' start times)."""


_TIMELINE_COUNTS: Final = {"orders": "order_count", "declines": "decline_count",
                            "refunds": "refund_count", "chargebacks": "chargeback_count"}


def trigger_fields(condition: Condition) -> frozenset[str]:
    """The changed fields (as `apply_event` reports them) after which the condition's next
    change must be computed again: its own field, and for a window over timelines the counts
    of every timeline it reads (an entry of amount 0 changes no sum, yet it will leave the
    window)."""
    if condition.window_ms is None or condition.field not in WINDOW_TIMELINES:
        return frozenset({condition.field})
    timelines = WINDOW_TIMELINES[condition.field]
    return frozenset({condition.field, *(_TIMELINE_COUNTS[name] for name in timelines)})


@dataclass(frozen=True, slots=True)
class TimeChange:
    """One condition's next change with time alone."""

    at_ms: int
    segment_id: str
    path: str
    """`groups[g].conditions[c]` of the condition in its segment."""
    condition: Condition


def time_changes(
    definitions: Iterable[SegmentDefinition], state: FeatureState, now_ms: int
) -> list[TimeChange]:
    """Every time-relative condition's next change after `now_ms`, earliest first."""
    found = [
        TimeChange(at, d.id, path, c)
        for d in definitions if d.time_relative
        for path, c in d.conditions_with_paths()
        if (at := condition_change_at(c, state, now_ms)) is not None
    ]
    return sorted(found, key=lambda change: (change.at_ms, change.segment_id, change.path))


def condition_change_at(condition: Condition, state: FeatureState, now_ms: int) -> int | None:
    """The first instant after `now_ms` at which `condition`'s operand changes with time
    alone, or None when it never will (until another event)."""
    duration = cutoff_duration(condition)
    if duration is not None:
        x: int | None = getattr(state, condition.field)
        return None if x is None or x + duration < now_ms else x + duration + 1
    window = condition.window_ms
    if window is None:
        return None
    return _oldest_leaves(window_times(condition.field, state), now_ms, window)


def cutoff_duration(condition: Condition) -> int | None:
    """`d` of a condition comparing a time with `now - d`, else None."""
    if condition.op in ("within_last", "not_within_last"):
        return int(condition.value)
    if isinstance(condition.value, Ago):
        return condition.value.duration_ms
    return None


def window_times(field: str, state: FeatureState) -> Iterator[int]:
    """The times a `within_days` window over `field` counts (in any order)."""
    if field in WINDOW_TIMELINES:
        for name in WINDOW_TIMELINES[field]:
            yield from getattr(state, name).times
    elif field in WINDOW_TIMES:
        yield from getattr(state, WINDOW_TIMES[field]).values()
    elif field == "active_subscriptions":
        yield from (at for _, at, active in state.subscriptions.values() if active)


def _oldest_leaves(times: Iterable[int], now_ms: int, window_ms: int) -> int | None:
    since = now_ms - window_ms
    inside = [t for t in times if t >= since]
    return min(inside) + window_ms + 1 if inside else None
