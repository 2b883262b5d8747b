"""Window timelines: sorted inserts, running sums, pruning at the horizon."""

from __future__ import annotations

from segments.timeline import (
    DAY_MS,
    HORIZON_MS,
    Timeline,
    count_since,
    insert,
    sum_since,
)

NOW = 1_000 * DAY_MS


def test_in_order_and_out_of_order_inserts_stay_sorted() -> None:
    tl = Timeline()
    for at, amount in [(NOW - 5, 5), (NOW - 1, 1), (NOW - 3, 3), (NOW - 9, 9), (NOW - 3, 30)]:
        insert(tl, at, amount, NOW - HORIZON_MS)
    assert list(tl.times) == [NOW - 9, NOW - 5, NOW - 3, NOW - 3, NOW - 1]
    assert [b - a for a, b in zip(tl.cum, tl.cum[1:], strict=False)] == [9, 5, 3, 30, 1]


def test_window_queries_include_the_boundary() -> None:
    tl = Timeline()
    for day in (1, 2, 3, 10):
        insert(tl, NOW - day * DAY_MS, day, NOW - HORIZON_MS)
    assert count_since(tl, NOW - 2 * DAY_MS) == 2
    assert sum_since(tl, NOW - 2 * DAY_MS) == 3
    assert count_since(tl, NOW - 100 * DAY_MS) == 4
    assert sum_since(tl, NOW) == 0
    assert count_since(Timeline(), NOW) == 0
    assert sum_since(Timeline(), NOW) == 0


def test_entries_beyond_the_horizon_are_pruned_without_changing_windows() -> None:
    tl = Timeline()
    insert(tl, NOW - HORIZON_MS - 1, 7, NOW - HORIZON_MS)  # too old to keep at all
    assert list(tl.times) == []
    insert(tl, NOW - 10, 1, NOW - HORIZON_MS)
    insert(tl, NOW, 2, NOW - 5)  # moves time on: the first entry ages out
    assert list(tl.times) == [NOW]
    assert sum_since(tl, NOW - HORIZON_MS) == 2
    assert tl.cum[0] == 1  # the pruned amount is kept as the base


def test_a_shorter_horizon_keeps_less() -> None:
    """The horizon is the longest live window: with 30 days, older entries go."""
    tl = Timeline()
    keep_from = NOW - 30 * DAY_MS
    insert(tl, NOW - 31 * DAY_MS, 5, keep_from)
    insert(tl, NOW - 29 * DAY_MS, 7, keep_from)
    assert list(tl.times) == [NOW - 29 * DAY_MS]
    assert count_since(tl, keep_from) == 1 and sum_since(tl, keep_from) == 7
