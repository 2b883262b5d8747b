"""SegmentIndex: incremental re-evaluation, caching, ordering, explain, recompute."""

from __future__ import annotations

import ast
import pathlib

import pytest

from segments.definitions import DefinitionError
from segments.evaluator import SegmentIndex, recompute
from segments.features import EVERY_FIELD, apply_event, new_state
from tests.segments.helpers import DAY, T0_MS, cond, event, order, segment

NOW = T0_MS


def test_only_segments_reading_a_changed_field_are_re_evaluated() -> None:
    spender = segment([cond("total_spent", "gte", 100)], segment_id="spender", slot=0)
    named = segment([cond("first_name", "exists")], segment_id="named", slot=1)
    index = SegmentIndex([spender, named])
    assert [d.id for d in index.affected({"total_spent"})] == ["spender"]
    assert [d.id for d in index.affected({"first_name", "x"})] == ["named"]
    assert index.affected(frozenset()) == []
    assert [d.id for d in index.affected({"*"})] == ["spender", "named"]
    state = new_state()
    state.total_spent = 1_000_000
    state.first_name = "A"
    # first_name changed only: the stale bit of `spender` (0) is copied, `named` computed.
    assert index.evaluate(state, NOW, frozenset({"first_name"})) == 0b10
    assert index.evaluate_all(state, NOW) == 0b11


def test_time_relative_and_dependent_segments_are_always_re_evaluated() -> None:
    recent = segment([cond("last_order_at", "within_last", {"days": 7})], segment_id="r", slot=0)
    windowed = segment([cond("order_count", "gte", 1, within_days=7)], segment_id="w", slot=1)
    builds = segment([cond("segments", "includes_any", ["r"])], segment_id="b", slot=2)
    other = segment([cond("email", "exists")], segment_id="o", slot=3)
    index = SegmentIndex([builds, other, windowed, recent])
    assert [d.id for d in index.affected(frozenset())] == ["r", "w", "b"]
    state = new_state()
    apply_event(state, order("o", 1, at=NOW), NOW)
    state.segments_mask = index.evaluate_all(state, NOW)
    assert state.segments_mask == 0b0111
    assert index.evaluate(state, NOW, frozenset()) == 0b0111
    # time passed, no event: the same compiled functions move their cutoffs with `now`
    assert index.evaluate(state, NOW + 8 * DAY, frozenset()) == 0
    assert index.evaluate_all(state, NOW + 8 * DAY) == 0
    assert index.evaluate(state, NOW + 6 * DAY, frozenset()) == 0b0111


def test_dependents_are_re_evaluated_through_every_level() -> None:
    a = segment([cond("order_count", "gte", 2)], segment_id="a", slot=0)
    b = segment([cond("segments", "includes_any", ["a"])], segment_id="b", slot=1)
    c = segment([cond("segments", "includes_none", ["b"])], segment_id="c", slot=2)
    index = SegmentIndex([c, b, a])
    assert [d.id for d in index.affected({"order_count"})] == ["a", "b", "c"]
    state = new_state()
    state.segments_mask = index.evaluate_all(state, NOW)
    assert state.segments_mask == 0b100
    state.order_count = 2
    assert index.evaluate(state, NOW, frozenset({"order_count"})) == 0b011


def test_a_new_customer_is_evaluated_whole() -> None:
    index = SegmentIndex([segment([cond("email", "not_exists")])])
    state = new_state()
    changed = apply_event(state, order("o", 1), NOW)
    assert changed is not None
    assert index.evaluate(state, NOW, changed) == 1


def test_functions_are_cached_per_changed_set() -> None:
    index = SegmentIndex([segment([cond("order_count", "gte", 1)])])
    changed = frozenset({"order_count"})
    index.evaluate(new_state(), NOW, changed)
    first = index._cache[changed]
    index.evaluate(new_state(), NOW, frozenset({"order_count"}))
    assert index._cache[frozenset({"order_count"})] is first


def test_bits_of_slots_outside_the_index_are_kept_until_evaluate_all() -> None:
    index = SegmentIndex([segment([cond("order_count", "gte", 1)], slot=3)])
    state = new_state()
    state.segments_mask = 0b1_0001  # slot 0 and 4 belong to deleted segments
    state.order_count = 1
    assert index.evaluate(state, NOW, frozenset({"order_count"})) == 0b1_1001
    assert index.evaluate(state, NOW, EVERY_FIELD) == 0b1_1001
    assert index.evaluate_all(state, NOW) == 0b1000
    assert index.mask == 0b1000


def test_wide_slots_work() -> None:
    index = SegmentIndex([segment([cond("order_count", "gte", 0)], slot=1000)])
    assert index.evaluate_all(new_state(), NOW) == 1 << 1000


def test_index_rejects_duplicates_and_bad_graphs() -> None:
    a = segment([cond("email", "exists")], segment_id="a", slot=0)
    with pytest.raises(DefinitionError):
        SegmentIndex([a, segment([cond("email", "exists")], segment_id="b", slot=0)])
    with pytest.raises(DefinitionError):
        SegmentIndex([a, a])
    with pytest.raises(DefinitionError, match="does not exist"):
        SegmentIndex([segment([cond("segments", "includes_any", ["z"])], segment_id="b")])


def test_explain_gives_each_condition_result() -> None:
    d = segment([cond("order_count", "gte", 1), cond("email", "exists")],
                [cond("tags", "includes_any", ["vip"])], segment_id="x")
    index = SegmentIndex([d])
    state = new_state()
    state.order_count = 2
    assert index.explain(state, NOW, "x") == [[True, False], [False]]
    with pytest.raises(KeyError):
        index.explain(state, NOW, "nope")


def test_generated_source_holds_no_definition_values() -> None:
    sneaky = "x'); import os; os.system('echo pwned'); ('"
    d = segment([cond("email", "eq", sneaky), cond(f"properties.{sneaky}", "exists")])
    index = SegmentIndex([d])
    source = index._all.source  # type: ignore[attr-defined]
    assert "pwned" not in source
    ast.parse(source)
    state = new_state()
    state.email = sneaky
    state.properties = {sneaky: 1}
    assert index.evaluate_all(state, NOW) == 1


def test_recompute_applies_everything_and_erases_on_delete() -> None:
    index = SegmentIndex([segment([cond("order_count", "gte", 2)])])
    events = [order("a", 1), order("b", 1), order("b", 1)]
    state = recompute(events, NOW, index)
    assert (state.order_count, state.segments_mask) == (2, 1)
    state = recompute([*events, event("customer.deleted"), order("c", 1)], NOW, index)
    assert (state.order_count, state.segments_mask) == (1, 0)


def test_segments_package_does_no_io() -> None:
    forbidden = {"asyncio", "aiokafka", "redis", "httpx", "streams", "providers", "socket",
                 "os", "starlette", "uvicorn"}
    package = pathlib.Path(__file__).parents[2] / "segments"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
