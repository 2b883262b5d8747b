"""Code generation: segment definitions to one Python function per changed-field set.

`compile_evaluator(defs, bits)` writes the source of

    def evaluate(s, now, m):
        <load every operand the segments need into locals, once>
        if <group 1> or <group 2>: m |= BIT  else: m &= ~BIT     # per segment
        return m

and `exec`s it. Definitions come in topological order, so a `segments`
condition reads bits of `m` already computed in this call. No value from a
definition is ever pasted into the source: every constant (strings, sets,
property names) is passed in the function's globals under a generated name.
Identifiers in the source come only from the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from segments.catalog import field_spec
from segments.definitions import Condition, SegmentDefinition
from segments.reducers import average_order_value
from segments.state import FeatureState
from segments.timeline import DAY_MS, count_since, sum_since
from segments.values import property_key

Evaluate = Callable[[FeatureState, int, int], int]
Explain = Callable[[FeatureState, int, int], list[list[bool]]]

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
_FALSE_WHEN_MISSING: Final = frozenset({"neq", "not_in"})
_RUNTIME: Final[dict[str, Any]] = {
    "_aov": average_order_value,
    "_count_since": count_since,
    "_sum_since": sum_since,
    "_pkey": property_key,
    "_NUM": (int, float),
}


class _Codegen:
    """Collects constants and operand loads while conditions are turned into expressions."""

    def __init__(self, bits: Mapping[str, int]) -> None:
        self.bits = bits
        self.constants: dict[str, Any] = dict(_RUNTIME)
        self.loads: dict[str, str] = {}  # local name -> statement that assigns it
        self.property_names: dict[str, str] = {}  # property name -> constant holding it

    def const(self, value: Any) -> str:
        name = f"_k{len(self.constants)}"
        self.constants[name] = value
        return name

    def load(self, name: str, statement: str) -> str:
        self.loads.setdefault(name, statement)
        return name

    def segment(self, definition: SegmentDefinition) -> str:
        groups = (" and ".join(self.condition(c) for c in group) for group in definition.groups)
        return " or ".join(f"({g})" for g in groups)

    def condition(self, c: Condition) -> str:
        if c.type == "segments":
            return self._segments(c)
        if c.type == "property":
            return self._property(c)
        return self._typed(c, self._operand(c))

    # ---- operands -------------------------------------------------------

    def _operand(self, c: Condition) -> str:
        if c.within_days is not None:
            return self._window(c.field, c.within_days)
        if c.field == "average_order_value":
            return self.load("f_average_order_value", "f_average_order_value = _aov(s)")
        name = f"f_{c.field}"
        self.load(name, f"{name} = s.{c.field}")
        if c.type != "text":
            return name
        folded = f"t_{c.field}"
        return self.load(folded, f"{folded} = None if {name} is None else {name}.casefold()")

    def _window(self, field: str, days: int) -> str:
        name = f"w_{field}_{days}"
        since = f"now - {days * DAY_MS}"
        if field == "total_spent":
            parts = (f"_sum_since(s.{tl}, {since})" for tl in ("orders", "refunds", "chargebacks"))
            a, b, c = parts
            return self.load(name, f"{name} = {a} - {b} - {c}")
        return self.load(name, f"{name} = _count_since(s.{_TIMELINES[field]}, {since})")

    # ---- typed fields ---------------------------------------------------

    def _typed(self, c: Condition, x: str) -> str:
        test = self._test(c, x)
        spec = field_spec(c.field)
        nullable = c.within_days is None and spec is not None and spec.nullable
        if not nullable or c.op in ("exists", "not_exists"):
            return test
        if c.op in _FALSE_WHEN_MISSING:
            return f"({x} is None or {test})"
        return f"({x} is not None and {test})"

    def _test(self, c: Condition, x: str) -> str:
        op = c.op
        if op in _COMPARE:
            return f"{x} {_COMPARE[op]} {self.const(c.value)}"
        if op == "between":
            return f"{self.const(c.value[0])} <= {x} <= {self.const(c.value[1])}"
        if c.type == "set":
            return self._set_test(op, x, c.value)
        return self._misc_test(op, x, c.value)

    def _set_test(self, op: str, x: str, value: Any) -> str:
        k = self.const(value) if op.startswith("includes") else ""
        return {
            "includes_any": f"not {x}.isdisjoint({k})",
            "includes_all": f"{k} <= {x}",
            "includes_none": f"{x}.isdisjoint({k})",
            "exists": f"len({x}) != 0",
            "not_exists": f"len({x}) == 0",
        }[op]

    def _misc_test(self, op: str, x: str, value: Any) -> str:
        k = "" if value is None else self.const(value)
        return {
            "contains": f"{k} in {x}",
            "starts_with": f"{x}.startswith({k})",
            "ends_with": f"{x}.endswith({k})",
            "exists": f"{x} is not None",
            "not_exists": f"{x} is None",
            "before": f"{x} < {k}",
            "after": f"{x} >= {k}",
            "within_last": f"{x} >= now - {k}",
            "not_within_last": f"{x} < now - {k}",
        }[op]

    # ---- segments and properties ------------------------------------------

    def _segments(self, c: Condition) -> str:
        mask = sum(self.bits[ref] for ref in c.value)
        k = self.const(mask)
        return {
            "includes_any": f"(m & {k}) != 0",
            "includes_all": f"(m & {k}) == {k}",
            "includes_none": f"(m & {k}) == 0",
        }[c.op]

    def _property(self, c: Condition) -> str:
        raw = self._property_load(c)
        op = c.op
        if op in ("eq", "neq", "in", "not_in"):
            key = self.load(f"{raw}k", f"{raw}k = _pkey({raw})")
            return f"({key} {_COMPARE[op]} {self.const(c.value)})"
        if op in ("exists", "not_exists"):
            return f"({self._misc_test(op, raw, None)})"
        kind = "type({x}) is str" if op in ("contains", "starts_with", "ends_with") else (
            "type({x}) in _NUM")
        return f"({kind.format(x=raw)} and {self._test(c, raw)})"

    def _property_load(self, c: Condition) -> str:
        self.load("props", "props = s.properties")
        name = c.property_name
        key = self.property_names.get(name or "")
        if key is None:
            key = self.property_names[name or ""] = self.const(name)
        return self.load(f"p{key}", f"p{key} = props.get({key})")


def compile_evaluator(defs: Iterable[SegmentDefinition], bits: Mapping[str, int]) -> Evaluate:
    """One function evaluating `defs` (topologically ordered) into the mask `m`."""
    gen = _Codegen(bits)
    body = []
    for d in defs:
        bit = gen.const(1 << d.slot)
        clear = gen.const(~(1 << d.slot))
        body += [f"    if {gen.segment(d)}:", f"        m |= {bit}",
                 "    else:", f"        m &= {clear}"]
    lines = ["def evaluate(s, now, m):", *_indent(gen.loads.values()), *body, "    return m"]
    return _exec(lines, gen.constants, "evaluate")  # type: ignore[no-any-return]


def compile_explainer(definition: SegmentDefinition, bits: Mapping[str, int]) -> Explain:
    """A function returning each condition's result, group by group."""
    gen = _Codegen(bits)
    rows = ", ".join(
        "[" + ", ".join(f"bool({gen.condition(c)})" for c in group) + "]"
        for group in definition.groups
    )
    lines = ["def explain(s, now, m):", *_indent(gen.loads.values()), f"    return [{rows}]"]
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
