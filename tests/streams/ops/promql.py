"""A superficial PromQL checker for the dashboard and alert files: tokens, brackets, label
matchers, range selectors, known functions; and the metric names an expression reads.

Not Prometheus' parser: it rejects what a typo or a bad edit usually produces (an unknown
function, an unbalanced bracket, a malformed matcher or duration, two operands with no operator
between them), which is what a test of hand-edited files needs.
"""

from __future__ import annotations

import re
from typing import Final

FUNCTIONS: Final = frozenset({
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "delta", "deriv", "exp", "floor",
    "histogram_quantile", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "max_over_time", "min_over_time", "predict_linear", "quantile_over_time", "rate", "resets",
    "round", "scalar", "sort", "sort_desc", "sqrt", "sum_over_time", "time", "timestamp",
    "vector", "last_over_time", "present_over_time",
})
AGGREGATIONS: Final = frozenset({
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
})
LABEL_LISTS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
BINARY_WORDS: Final = frozenset({"and", "or", "unless"})
MODIFIERS: Final = frozenset({"bool", "offset"})

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},])
""", re.VERBOSE)
_RANGE = re.compile(r"^\[(\d+[smhdwy]|\$__\w+)(:(\d+[smhdwy])?)?\]$")
_MATCH_OPS: Final = frozenset({"=", "!=", "=~", "!~"})
_BINARY_OPS: Final = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<="})


class PromQLError(ValueError):
    pass


def tokens(expr: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None:
            raise PromQLError(f"unexpected {expr[at:at + 10]!r} at {at} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "ws":
            found.append((kind, match.group()))
        at = match.end()
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` reads; PromQLError when it is not well formed."""
    toks = tokens(expr)
    _balanced(expr, toks)
    names: set[str] = set()
    i, operand_ended = 0, False
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in LABEL_LISTS:
            i = _label_list(expr, toks, i + 1) if following == "(" else i + 1
            continue
        starts_operand = kind in ("ident", "number", "string") or text == "("
        if starts_operand and operand_ended and text not in BINARY_WORDS | MODIFIERS:
            raise PromQLError(f"two operands with no operator before {text!r} in {expr!r}")
        if kind == "ident" and text in BINARY_WORDS | MODIFIERS:
            operand_ended = False
        elif kind == "ident" and following == "(":
            if text not in FUNCTIONS | AGGREGATIONS:
                raise PromQLError(f"unknown function {text!r} in {expr!r}")
            operand_ended = False
        elif kind == "ident" and text in AGGREGATIONS and following in LABEL_LISTS:
            operand_ended = False
        elif kind == "ident":
            names.add(text)
            operand_ended = True
            if following == "{":
                i = _matchers(expr, toks, i + 1)
                continue
        elif kind == "op" and text == "{":
            i = _matchers(expr, toks, i)  # a selector with no name: {__name__=~"..."}
            operand_ended = True
            continue
        elif kind == "range":
            if not _RANGE.match(text):
                raise PromQLError(f"bad range {text!r} in {expr!r}")
        elif kind in ("number", "string") or text == ")":
            operand_ended = True
        elif text == "(" or text == "," or text in _BINARY_OPS:
            operand_ended = False
        i += 1
    if toks and toks[-1][0] == "op" and toks[-1][1] in _BINARY_OPS:
        raise PromQLError(f"{expr!r} ends with an operator")
    return names


def _balanced(expr: str, toks: list[tuple[str, str]]) -> None:
    pairs, stack = {")": "(", "}": "{"}, []
    for kind, text in toks:
        if kind != "op":
            continue
        if text in "({":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            raise PromQLError(f"unbalanced {text!r} in {expr!r}")
    if stack:
        raise PromQLError(f"unclosed {stack[-1]!r} in {expr!r}")


def _label_list(expr: str, toks: list[tuple[str, str]], i: int) -> int:
    """Skip `( label, ... )` starting at toks[i]; the index after it."""
    i += 1
    while toks[i][1] != ")":
        kind, text = toks[i]
        if kind != "ident" and text != ",":
            raise PromQLError(f"bad label list near {text!r} in {expr!r}")
        i += 1
    return i + 1


def _matchers(expr: str, toks: list[tuple[str, str]], i: int) -> int:
    """Skip `{ label op "value", ... }` starting at toks[i]; the index after it."""
    i += 1
    while toks[i][1] != "}":
        label, op, value = toks[i], toks[i + 1], toks[i + 2]
        if label[0] != "ident" or op[1] not in _MATCH_OPS or value[0] != "string":
            raise PromQLError(f"bad label matcher near {label[1]!r} in {expr!r}")
        i += 3
        if toks[i][1] == ",":
            i += 1
    return i + 1
