"""Code generation: segment definitions to one Python function per changed-field set.

`compile_evaluator(defs, bits)` writes the source of

    def evaluate(s, now, m):
        m &= ~<bits of all segments evaluated here>
        <time cutoffs `now - duration`, recomputed only when `now` differs from the last call's>
        <operands: cheap ones loaded once, costly ones computed on first use>
        if <group 1> or <group 2>: m |= BIT                      # per segment
        return m

and `exec`s it. Definitions come in topological order, so a `segments`
condition reads bits of `m` already computed in this call. Conditions in a
group (and groups in a segment) are tried cheapest first; the result is the
same, short-circuiting just skips more work.

Missing values need no test of their own: a missing number or time is loaded as
NaN (false in every comparison, unequal to everything) and a missing text as ""
(condition texts are never empty), which is exactly the missing-value rule.

Safety: no text from a definition is pasted into the source. Strings, sets and
property names are passed as globals under generated names; only exact `int`s
are written as literals. Identifiers come from the catalog.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from segments.catalog import field_spec
from segments.definitions import Condition, SegmentDefinition
from segments.money import divide_half_even
from segments.schedule import WINDOW_TIMELINES, WINDOW_TIMES, cutoff_duration
from segments.state import FeatureState
from segments.timeline import DAY_MS
from segments.values import Ago

Evaluate = Callable[[FeatureState, int, int], int]
Explain = Callable[[FeatureState, int, int], list[list[bool]]]
NextChange = Callable[[FeatureState, int], int | None]

_TIMELINES: Final = {
    "order_count": "orders",
    "decline_count": "declines",
    "refund_count": "refunds",
    "chargeback_count": "chargebacks",
}

_COMPARE: Final = {
    "eq": "==", "neq": "!=", "in": "in", "not_in": "not in",
    "gt": ">", "gte": ">=", "lt": "<", "lte": "<=",
}  # fmt: skip
_TEXT_TESTS: Final = ("contains", "starts_with", "ends_with")
_EXISTENCE: Final = ("exists", "not_exists")
_COST: Final = {"segments": 1, "enum": 1, "count": 1, "money": 1, "datetime": 1, "id": 1,
                "set": 2, "text": 3, "property": 3}


class _Unset:
    """Marks a lazily computed local that has not been computed yet in this call."""


_RUNTIME: Final[dict[str, Any]] = {
    "_bl": bisect_left,
    "_dhe": divide_half_even,
    "_KIND": {str: "s", int: "n", float: "n", bool: "b"},  # as in values.property_key
    "_NUM": (int, float),
    "_NAN": float("nan"),
    "_U": _Unset(),
}


def _cost(c: Condition) -> int:
    extra = 3 if c.within_days is not None or c.field == "average_order_value" else 0
    return _COST.get(c.type, 1) + extra


class _Codegen:
    """Collects constants and operand loads while conditions are turned into expressions."""

    def __init__(self, bits: Mapping[str, int]) -> None:
        self.bits = bits
        self.constants: dict[str, Any] = dict(_RUNTIME)
        self.loads: dict[str, str] = {}  # local name -> statement that assigns it
        self.durations: list[int] = []  # of `since` cutoffs, in their order in `_SINCE`
        self.property_names: dict[str, str] = {}  # property name -> constant holding it

    def const(self, value: Any) -> str:
        """A name for `value` in the source: exact ints become literals, the rest globals."""
        if type(value) is int:
            return f"({value})"
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def eager(self, name: str, expression: str) -> str:
        """A local assigned once at the top of the function."""
        self.loads.setdefault(name, f"{name} = {expression}")
        return name

    def lazy(self, name: str, expression: str) -> str:
        """An expression computing the local on its first use in this call."""
        self.loads.setdefault(name, f"{name} = _U")
        return f"({name} if {name} is not _U else ({name} := {expression}))"

    def since(self, duration_ms: int) -> str:
        """`now - duration_ms`, read from the cutoffs `refresh_since` computes once per `now`."""
        if duration_ms not in self.durations:
            self.durations.append(duration_ms)
        index = self.durations.index(duration_ms) + 1
        return self.eager(f"since_{duration_ms}", f"_sn[{index}]")

    def refresh_since(self) -> list[str]:
        """Statements that set `_sn` to the cutoffs `[now, now - d1, now - d2, ...]`.

        `now` is the batch's clock, the same for thousands of calls, and the cutoffs are
        multi-digit ints: computed per call, each subtraction allocated a new int. The last
        list computed is kept in `_SINCE[0]` and replaced whole, never changed in place, so a
        call that reads it sees one `now`'s cutoffs whatever another thread does.
        """
        if not self.durations:
            return []
        self.constants["_SINCE"] = [[None]]
        cutoffs = ", ".join(f"now - {d}" for d in self.durations)
        return ["_sn = _SINCE[0]", "if _sn[0] != now:", f"    _sn = _SINCE[0] = [now, {cutoffs}]"]

    def segment(self, definition: SegmentDefinition) -> str:
        groups = sorted((sorted(group, key=_cost) for group in definition.groups),
                        key=lambda group: sum(map(_cost, group)))
        return " or ".join(f"({' and '.join(map(self.condition, g))})" for g in groups)

    def condition(self, c: Condition) -> str:
        if c.type == "segments":
            return self._segments(c)
        if c.type == "property":
            return self._property(c)
        if c.op in _EXISTENCE:
            return self._existence(c)
        return f"({self._test(c, self._operand(c))})"

    # ---- operands -------------------------------------------------------

    def _raw(self, field: str) -> str:
        return self.eager(f"f_{field}", f"s.{field}")

    def _operand(self, c: Condition) -> str:
        if c.within_days is not None:
            return self._window(c.field, c.within_days)
        if c.field == "average_order_value":
            total, count = self._raw("total_spent"), self._raw("order_count")
            return self.lazy("a_average_order_value",
                             f"_dhe({total}, {count}) if {count} else _NAN")
        raw = self._raw(c.field)
        if c.type == "text":
            return self.lazy(f"t_{c.field}", f'"" if {raw} is None else {raw}.casefold()')
        if c.type == "id":
            return self.eager(f"i_{c.field}", f'"" if {raw} is None else {raw}')
        spec = field_spec(c.field)
        if spec is not None and spec.nullable:
            return self.eager(f"n_{c.field}", f"_NAN if {raw} is None else {raw}")
        return raw

    def _window(self, field: str, days: int) -> str:
        since = self.since(days * DAY_MS)
        if field in WINDOW_TIMES:
            times = self.eager(f"wt_{field}", f"s.{WINDOW_TIMES[field]}")
            return self.lazy(f"w_{field}_{days}",
                             f"{{k for k, t in {times}.items() if t >= {since}}}")
        if field == "active_subscriptions":
            subs = self.eager("subs", "s.subscriptions")
            return self.lazy(f"w_{field}_{days}",
                             f"{{p for p, at, on in {subs}.values() if on and at >= {since}}}")
        if field == "total_spent":
            parts = [self._window_sum(tl, since) for tl in ("orders", "refunds", "chargebacks")]
            return self.lazy(f"w_total_spent_{days}", " - ".join(parts))
        times = self.eager(f"tl_{field}", f"s.{_TIMELINES[field]}.times")
        return self.lazy(f"w_{field}_{days}", f"len({times}) - _bl({times}, {since})")

    def _window_sum(self, timeline: str, since: str) -> str:
        times = self.eager(f"tl_{timeline}_t", f"s.{timeline}.times")
        cum = self.eager(f"tl_{timeline}_c", f"s.{timeline}.cum")
        return f"({cum}[-1] - {cum}[_bl({times}, {since})])"

    # ---- tests ----------------------------------------------------------

    def _existence(self, c: Condition) -> str:
        negate = c.op == "not_exists"
        if c.type == "set":
            members = self._operand(c) if c.within_days is not None else self._raw(c.field)
            return f"(len({members}) {'==' if negate else '!='} 0)"
        raw = self._raw("order_count" if c.field == "average_order_value" else c.field)
        if c.field == "average_order_value":
            return f"({raw} {'==' if negate else '!='} 0)"
        return f"({raw} is {'' if negate else 'not '}None)"

    def _test(self, c: Condition, x: str) -> str:
        op, value = c.op, c.value
        if op in _COMPARE:
            return f"{x} {_COMPARE[op]} {self.const(value)}"
        if op == "between":
            return f"{self.const(value[0])} <= {x} <= {self.const(value[1])}"
        if op in ("within_last", "not_within_last"):
            return f"{x} {'>=' if op == 'within_last' else '<'} {self.since(value)}"
        if isinstance(value, Ago):  # relative before/after
            return f"{x} {'<' if op == 'before' else '>='} {self.since(value.duration_ms)}"
        k = self.const(value)
        return {
            "includes_any": f"not {x}.isdisjoint({k})",
            "includes_all": f"{k} <= {x}",
            "includes_none": f"{x}.isdisjoint({k})",
            "contains": f"{k} in {x}",
            "starts_with": f"{x}.startswith({k})",
            "ends_with": f"{x}.endswith({k})",
            "before": f"{x} < {k}",
            "after": f"{x} >= {k}",
        }[op]

    # ---- segments and properties ------------------------------------------

    def _segments(self, c: Condition) -> str:
        k = self.const(sum(self.bits[ref] for ref in c.value))
        return {
            "includes_any": f"(m & {k} != 0)",
            "includes_all": f"(m & {k} == {k})",
            "includes_none": f"(m & {k} == 0)",
        }[c.op]

    def _property(self, c: Condition) -> str:
        p = self._property_value(c.property_name or "")
        op = c.op
        if op in ("eq", "neq", "in", "not_in"):
            key = self.lazy(f"{p}k", f"(_KIND.get({p}.__class__), {p})")
            return f"({key} {_COMPARE[op]} {self.const(c.value)})"
        if op in _EXISTENCE:
            return f"({p} is {'not ' if op == 'exists' else ''}None)"
        kind = f"{p}.__class__ is str" if op in _TEXT_TESTS else f"{p}.__class__ in _NUM"
        return f"({kind} and {self._test(c, p)})"

    def _property_value(self, name: str) -> str:
        props = self.eager("props", "s.properties")
        key = self.property_names.get(name)
        if key is None:
            key = self.property_names[name] = self.const(name)
        return self.eager(f"p{key}", f"{props}.get({key})")


def compile_evaluator(defs: Iterable[SegmentDefinition], bits: Mapping[str, int]) -> Evaluate:
    """One function evaluating `defs` (topologically ordered) into the mask `m`.

    The bits of `defs` are cleared once at the top and each true segment sets its own: one
    operation on the (multi-digit, beyond 30 segments) mask per member instead of one per
    segment, since every operation on such an int allocates (docs/design.md, "Generated
    evaluators").
    """
    gen = _Codegen(bits)
    body = []
    evaluated = 0
    for d in defs:
        evaluated |= 1 << d.slot
        body += [f"    if {gen.segment(d)}:", f"        m |= {gen.const(1 << d.slot)}"]
    lines = ["def evaluate(s, now, m):", f"    m &= {gen.const(~evaluated)}",
             *_indent(gen.refresh_since()), *_indent(gen.loads.values()), *body, "    return m"]
    return _exec(lines, gen.constants, "evaluate")  # type: ignore[no-any-return]


def compile_next_change(defs: Iterable[SegmentDefinition]) -> NextChange:
    """One function giving the first instant after now at which any time-relative condition of
    `defs` changes with time alone (None: never), as `schedule.time_changes` defines it.

    Conditions reading the same time or window are one term: a customer's timer is computed
    after each change of its time-relevant fields, so the function is on the hot path.
    """
    cutoffs: dict[str, set[int]] = {}  # time field -> durations d of `x >= now - d` tests
    windows: dict[str, set[int]] = {}  # timeline, times dict or "subscriptions" -> windows
    for d in defs:
        for c in (c for group in d.groups for c in group):
            duration = cutoff_duration(c)
            if duration is not None:
                cutoffs.setdefault(c.field, set()).add(duration)
            elif c.window_ms is not None:
                for source in _window_sources(c.field):
                    windows.setdefault(source, set()).add(c.window_ms)
    lines = ["def next_change(s, now):", "    n = _NEVER"]
    for field, durations in sorted(cutoffs.items()):
        lines += [f"    x = s.{field}", "    if x is not None:"]
        for i, duration in enumerate(sorted(durations)):  # the first that holds is the min
            lines += [f"        {'if' if i == 0 else 'elif'} x + {duration} >= now:",
                      f"            if x + {duration + 1} < n: n = x + {duration + 1}"]
    for source, sizes in sorted(windows.items()):
        lines += _window_change_lines(source, sorted(sizes))
    lines.append("    return None if n == _NEVER else n")
    return _exec(lines, {"_bl": bisect_left, "_NEVER": _NEVER}, "next_change")  # type: ignore[no-any-return]


_NEVER: Final = 1 << 62


def _window_sources(field: str) -> tuple[str, ...]:
    if field in WINDOW_TIMELINES:
        return tuple(f"tl:{name}" for name in WINDOW_TIMELINES[field])
    if field in WINDOW_TIMES:
        return (f"times:{WINDOW_TIMES[field]}",)
    return ("subscriptions",)


def _window_change_lines(source: str, sizes: list[int]) -> list[str]:
    """When the oldest time inside each window of `source` leaves it."""
    kind, _, name = source.partition(":")
    if kind == "tl":  # sorted: the oldest inside is one bisect away
        lines = [f"    tt = s.{name}.times"]
        for w in sizes:
            lines += [f"    i = _bl(tt, now - {w})", "    if i < len(tt):",
                      f"        c = tt[i] + {w + 1}", "        if c < n: n = c"]
        return lines
    values = (f"s.{name}.values()" if kind == "times"
              else "(at for _, at, on in s.subscriptions.values() if on)")
    lines = []
    for w in sizes:
        lines += [f"    for t in {values}:", f"        if t >= now - {w} and t + {w + 1} < n:",
                  f"            n = t + {w + 1}"]
    return lines


def compile_explainer(definition: SegmentDefinition, bits: Mapping[str, int]) -> Explain:
    """A function returning each condition's result, group by group, in definition order."""
    gen = _Codegen(bits)
    rows = ", ".join(
        "[" + ", ".join(f"bool({gen.condition(c)})" for c in group) + "]"
        for group in definition.groups
    )
    lines = ["def explain(s, now, m):", *_indent(gen.refresh_since()),
             *_indent(gen.loads.values()), f"    return [{rows}]"]
    return _exec(lines, gen.constants, "explain")  # type: ignore[no-any-return]


def _indent(statements: Iterable[str]) -> list[str]:
    return [f"    {statement}" for statement in statements]


def _exec(lines: list[str], constants: dict[str, Any], name: str) -> Any:
    source = "\n".join(lines) + "\n"
    namespace = dict(constants)
    exec(compile(source, f"<segments:{name}>", "exec"), namespace)
    function = namespace[name]
    function.source = source  # kept for debugging and tests
    return function
