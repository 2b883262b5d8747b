"""Bounded, sorted per-customer timelines for `within_days` counts and sums.

A timeline keeps event times (epoch ms, ascending) and running sums of their
amounts. A window query is two bisects and one subtraction, never a scan.
Entries older than the horizon before now (`keep_from`) are pruned on insert. The
horizon is the longest window of the live segments (`SegmentIndex.horizon_ms`,
at most `TIMELINE_HORIZON_DAYS`); since no window exceeds it (and now only moves
forward), pruning never changes the answer of a window query. A segment created
later with a longer window sees only what was kept: history older than the
horizon in force when it was pruned is gone.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Final

import msgspec

DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
TIMELINE_HORIZON_DAYS: Final = 366
HORIZON_MS: Final = TIMELINE_HORIZON_DAYS * DAY_MS

if TYPE_CHECKING:
    Int64Array = array[int]
else:  # array is not subscriptable at run time before Python 3.12
    Int64Array = array


def empty_array() -> Int64Array:
    """A new, empty int64 array."""
    return array("q")


def _zero() -> Int64Array:
    return array("q", (0,))


class Timeline(msgspec.Struct, array_like=True, gc=False):
    """Sorted `times` and `cum`, where `cum[i + 1] - cum[i]` is the amount at `times[i]`.

    `cum[0]` is the sum of everything pruned so far, so `cum` has one more
    element than `times` and window sums never need rebasing. Both are packed
    int64 arrays: one compact block each, no per-entry objects for the cache or
    the garbage collector to chase (stored as msgpack bin, see `state`).
    """

    times: Int64Array = msgspec.field(default_factory=empty_array)
    cum: Int64Array = msgspec.field(default_factory=_zero)


def insert(tl: Timeline, at_ms: int, amount: int, keep_from: int) -> None:
    """Add an entry (in time order, stable for equal times) and prune those before
    `keep_from` (now less the horizon); an entry already before it is not kept at all."""
    cutoff = keep_from
    times, cum = tl.times, tl.cum
    if at_ms >= cutoff:
        if not times or at_ms >= times[-1]:
            times.append(at_ms)
            cum.append(cum[-1] + amount)
        else:
            _insert_inside(times, cum, at_ms, amount)
    if times and times[0] < cutoff:
        keep = bisect_left(times, cutoff)
        del times[:keep]
        del cum[:keep]


def _insert_inside(times: Int64Array, cum: Int64Array, at_ms: int, amount: int) -> None:
    i = bisect_right(times, at_ms)
    times.insert(i, at_ms)
    cum.insert(i + 1, cum[i] + amount)
    for j in range(i + 2, len(cum)):
        cum[j] += amount


def count_since(tl: Timeline, since_ms: int) -> int:
    """Number of entries at or after `since_ms`."""
    times = tl.times
    return len(times) - bisect_left(times, since_ms)


def sum_since(tl: Timeline, since_ms: int) -> int:
    """Sum of the amounts of entries at or after `since_ms`."""
    cum = tl.cum
    return cum[-1] - cum[bisect_left(tl.times, since_ms)]
