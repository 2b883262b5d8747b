"""The generated sections of the reference docs in docs/: run it to rewrite them.

    python -m streams.local.docs          # rewrite the generated sections of docs/*.md
    python -m streams.local.docs --check  # exit 1, naming them, when a section differs

A doc keeps its hand-written prose; only what sits between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->`` is rewritten, from the sources the code itself uses: the JSON
Schemas (`streams.schemas`), the condition catalog (`segments.catalog`) with the definition
limits and value shapes (`segments.definitions`, `segments.values`), and the HTTP API's own
OpenAPI description. `tests/test_docs.py` runs `--check`, so a change to any of them that the
docs do not follow fails the tests; it also validates every example here against its schema.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, cast

from segments.catalog import FIELDS, PROPERTY_FIELD, FieldSpec
from segments.deadletters import dlq_headers
from segments.definitions import (
    MAX_CONDITIONS,
    MAX_GROUPS,
    MAX_NAME_LENGTH,
    DefinitionError,
    parse_definition,
)
from segments.errors import INVALID_EVENT_CODES
from segments.events import EVENT_TYPES, TOPIC_OF_TYPE
from segments.timeline import TIMELINE_HORIZON_DAYS
from segments.values import MAX_DAYS, MAX_LIST_ITEMS
from streams.schemas import load_schema

Schema = dict[str, Any]

DOCS_DIR: Final = Path(__file__).resolve().parents[2] / "docs"
_SECTION: Final = re.compile(
    r"(<!-- generated: (?P<name>[\w.:-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.DOTALL)

# -- examples (tests/test_docs.py validates each against its schema) ---------------------------

_ENVELOPE: Final = {"occurred_at": "2026-11-28T17:32:00Z", "customer_id": "c-1042"}
_ADDRESS: Final = {"country": "US", "state": "CA", "city": "Oakland", "postal_code": "94612"}

EVENT_EXAMPLES: Final[dict[str, Schema]] = {
    "prospect.created": {"data": {
        "email": "ana@example.com", "first_name": "Ana", "last_name": "Silva",
        "campaign_id": "cmp-fall", "tags": ["newsletter"], "properties": {"plan": "trial"}}},
    "customer.created": {"data": {
        "email": "ana@example.com", "first_name": "Ana", "phone": "+1 510 555 0100",
        "billing": _ADDRESS, "shipping": _ADDRESS, "affiliate_id": "aff-7"}},
    "customer.updated": {"data": {"email": "ana.silva@example.com", "tags": ["vip"]}},
    "customer.deleted": {"data": {}},
    "order.placed": {"data": {
        "order_id": "o-5001", "total": "129.90", "currency": "USD",
        "products": [{"product_id": "p-gold", "category": "jewelry", "quantity": 1,
                      "price": "129.90"}],
        "campaign_id": "cmp-fall", "billing": {"country": "US"}}},
    "order.declined": {"data": {"order_id": "o-5002", "total": 59, "reason": "card_declined"}},
    "order.refunded": {"data": {"order_id": "o-5001", "amount": "29.90"}},
    "order.chargeback": {"data": {"order_id": "o-5001", "amount": 100}},
    "subscription.started": {"data": {"subscription_id": "s-77", "product_id": "p-box"}},
    "subscription.cancelled": {"data": {"subscription_id": "s-77", "product_id": "p-box"}},
}

MEMBERSHIP_EXAMPLES: Final[dict[str, Schema]] = {
    "added": {
        "event_id": "5d0f3c9e8b2a41f7a6c1e0d9b8a7f6e5", "type": "segment.member_added",
        "segment_id": "lapsed-vips", "segment_version": 3, "customer_id": "c-1042",
        "email": "ana@example.com", "changed_at": "2026-11-28T17:32:00.120Z",
        "reason": "event", "cause_event_id": "e-90211"},
    "removed": {
        "event_id": "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", "type": "segment.member_removed",
        "segment_id": "lapsed-vips", "segment_version": 3, "customer_id": "c-1042",
        "email": "ana@example.com", "changed_at": "2027-01-27T17:32:00.400Z", "reason": "time"},
    "updated": {
        "event_id": "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "type": "segment.member_updated",
        "segment_id": "lapsed-vips", "segment_version": 3, "customer_id": "c-1042",
        "email": "ana.silva@example.com", "previous_email": "ana@example.com",
        "changed_at": "2026-12-02T09:00:00.010Z", "reason": "event",
        "cause_event_id": "e-90377"},
}


def event_example(event_type: str) -> Schema:
    """The documented example of one event type, envelope included."""
    number = EVENT_TYPES.index(event_type) + 1
    return {"event_id": f"e-{9020 + number}", "type": event_type, **_ENVELOPE,
            **EVENT_EXAMPLES[event_type]}


# What each operator's `value` looks like (segments.values checks them; the test checks that
# every operator of the catalog has a line here).
OPERATOR_VALUES: Final[dict[str, tuple[str, str]]] = {
    "eq": ("one value of the field's type", '"US"'),
    "neq": ("one value of the field's type; also true when the field is missing", '"US"'),
    "in": (f"a non-empty list of values (at most {MAX_LIST_ITEMS})", '["US", "CA"]'),
    "not_in": ("a non-empty list of values; also true when the field is missing", '["US"]'),
    "gt": ("a number (money: a number or a decimal string)", "100"),
    "gte": ("a number", '"49.99"'),
    "lt": ("a number", "3"),
    "lte": ("a number", "3"),
    "between": ("two numbers, low first, both included", "[10, 100]"),
    "contains": ("a non-empty text", '"@example."'),
    "starts_with": ("a non-empty text", '"+1"'),
    "ends_with": ("a non-empty text", '".edu"'),
    "exists": ("no `value`: the field has a value (a set: a non-empty one)", ""),
    "not_exists": ("no `value`: the field is missing (a set: an empty one)", ""),
    "includes_any": ("a non-empty list of texts (segment ids for `segments`)",
                     '["p-gold", "p-silver"]'),
    "includes_all": ("a non-empty list of texts", '["p-gold", "p-silver"]'),
    "includes_none": ("a non-empty list of texts; also true on an empty set", '["p-gold"]'),
    "within_last": (f'a duration: {{"days": N}} (1 to {MAX_DAYS}) or {{"hours": N}} '
                    f"(1 to {MAX_DAYS * 24})", '{"days": 30}'),
    "not_within_last": ("a duration, as for `within_last`; false on a missing time",
                        '{"hours": 12}'),
    "before": ("a date, a date-time with a time zone, or a duration before now",
               '"2026-01-31"'),
    "after": ("a date, a date-time with a time zone, or a duration before now",
              '{"days": 30}'),
}

# -- rendering JSON Schema ------------------------------------------------------------------------

_DEF_WORDS: Final = {
    "timestamp": "RFC 3339 date-time with a time zone",
    "money": "amount (number or decimal string)",
    "optional_money": "amount or null",
    "id": "non-empty string",
    "optional_string": "string or null",
    "profile_address": "address object or null",
    "order_address": "address object or null",
}


def type_words(schema: Schema) -> str:
    """A short, readable name for what a JSON Schema accepts."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return _DEF_WORDS.get(name, name)
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(type_words(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return f"list of {type_words(schema.get('items', {}))}"
    if isinstance(kind, list):
        return " \\| ".join(str(k) for k in kind)
    if kind == "string" and schema.get("maxLength"):
        return f"string ({schema.get('minLength', 0)} to {schema['maxLength']} characters)"
    if kind == "object" and isinstance(schema.get("properties"), dict):
        return "object: " + ", ".join(f"`{k}`" for k in schema["properties"])
    return str(kind or "any")


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, `<` and `>` outside code spans as entities."""
    pieces = " ".join(text.split()).replace("|", "\\|").replace("\\\\|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;")
                    for i, p in enumerate(pieces))


# What the schemas leave undescribed (their properties' names say most of it).
FIELD_NOTES: Final = {
    "email": "Email address; the one members are sent to providers under.",
    "first_name": "First name.",
    "last_name": "Last name.",
    "phone": "Phone number, as sent.",
    "billing": "Billing address.",
    "shipping": "Shipping address.",
    "campaign_id": "Marketing campaign; the latest one named is kept.",
    "affiliate_id": "Affiliate; the latest one named is kept.",
    "tags": "Profile tags; replaces the stored list.",
    "products": "Order lines: `product_id`, `category`, `quantity` (integer), `price` (amount), "
                "each optional.",
    "reason": "Why the order was declined.",
    "amount": "Amount refunded or charged back; subtracted from `total_spent`.",
    "order_id": "The order; an `order_id` placed twice counts once.",
    "total": "Order total.",
    "subscription_id": "The subscription.",
    "product_id": "The subscribed product.",
    "customer_id": "The customer the event is about; also the Kafka message key.",
}


# The schemas and the API cite the contract segstream implements; these docs stand alone.
_CONTRACT_SECTION: Final = re.compile(r"\s*\(contract section \d+\)")


def _description(schema: Schema, defs: Mapping[str, Schema], name: str = "") -> str:
    if name in FIELD_NOTES and not schema.get("description"):
        return FIELD_NOTES[name]
    text = _CONTRACT_SECTION.sub("", schema.get("description", ""))
    if not text and "$ref" in schema:
        text = defs.get(str(schema["$ref"]).rsplit("/", 1)[-1], {}).get("description", "")
    if not text:
        for option in schema.get("anyOf", []):
            text = option.get("description", "") or text
    return str(text)


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fields_table(schema: Schema, defs: Mapping[str, Schema]) -> str:
    """name, type, required or optional, meaning: one row per property of `schema`."""
    required = set(schema.get("required", []))
    rows = [(f"`{name}`", type_words(prop), "required" if name in required else "optional",
             _description(prop, defs, name))
            for name, prop in schema.get("properties", {}).items()]
    return table(("field", "type", "", "meaning"), rows)


def _json_block(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


# -- sections -------------------------------------------------------------------------------------

def _envelope() -> str:
    schema = load_schema("order.placed")
    envelope = {**schema, "properties": {k: v for k, v in schema["properties"].items()
                                          if k != "data"}}
    envelope["properties"]["customer_id"] = {
        "type": "string", "description": FIELD_NOTES["customer_id"]}
    envelope["properties"]["type"] = {
        "type": "string", "description": "The event type: one of the types below."}
    envelope["properties"]["data"] = {
        "type": "object", "description": "The type's fields, below; unknown ones are ignored."}
    return fields_table(envelope, schema["$defs"])


def _types() -> str:
    rows = []
    for event_type in EVENT_TYPES:
        data = load_schema(event_type)["properties"]["data"]
        required = data.get("required", [])
        optional = [k for k in data.get("properties", {}) if k not in required]
        rows.append((f"[`{event_type}`](#{event_type.replace('.', '')})",
                     f"`{TOPIC_OF_TYPE[event_type]}`",
                     ", ".join(f"`{k}`" for k in required) or "none",
                     ", ".join(f"`{k}`" for k in optional) or "none"))
    return table(("type", "topic", "required in `data`", "optional in `data`"), rows)


def _value_types() -> str:
    defs = load_schema("order.placed")["$defs"] | load_schema("customer.created")["$defs"]
    rows = [(f"{_DEF_WORDS.get(name, name)} (`{name}`)",
             " ".join(filter(None, (_description(defs[name], defs),
                                    fields_description(defs[name])))))
            for name in ("timestamp", "money", "profile_address", "order_address")]
    return table(("value", "what it accepts"), rows)


def fields_description(schema: Schema) -> str:
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "object":
            return "An object with " + ", ".join(
                f"`{k}` ({type_words(v)})" for k, v in option.get("properties", {}).items())
    return ""


def _event(event_type: str) -> str:
    schema = load_schema(event_type)
    data = schema["properties"]["data"]
    parts = [f"Topic `{TOPIC_OF_TYPE[event_type]}`. {_description(data, schema['$defs'])}"
             .rstrip()]
    if data.get("properties"):
        parts.append(fields_table(data, schema["$defs"]))
    parts.append(_json_block(event_example(event_type)))
    return "\n\n".join(parts)


def _dead_letters() -> str:
    headers = dlq_headers("orders", 3, 1042, "missing_field",
                          "missing required field data.order_id")
    rows = [(f"`{name}`", f"`{value.decode()}`") for name, value in headers]
    codes = ", ".join(f"`{code}`" for code in INVALID_EVENT_CODES)
    return (table(("header", "example"), rows)
            + f"\n\nCodes of input events (`segstream.error.stage` `processor`): {codes}.")


def _limits() -> str:
    rows = [
        ("conditions in a segment, over all groups", f"1 to {MAX_CONDITIONS}"),
        ("groups in a segment", f"1 to {MAX_GROUPS}, none empty"),
        ("`name`", f"1 to {MAX_NAME_LENGTH} characters"),
        ("items in a list value (`in`, `includes_any`, ...)", f"1 to {MAX_LIST_ITEMS}"),
        ('durations (`{"days": N}`, `{"hours": N}`)',
         f"N whole, 1 to {MAX_DAYS} days or 1 to {MAX_DAYS * 24} hours"),
        ("`within_days`", f"whole number, 1 to {TIMELINE_HORIZON_DAYS}"),
    ]
    return table(("what", "allowed"), rows)


INVALID_EXAMPLE: Final[Schema] = {
    "name": "Big spenders",
    "groups": [
        {"conditions": [{"field": "total_spent", "op": "gte", "value": "lots"}]},
        {"conditions": [{"field": "last_order_at", "op": "within_last", "value": 30},
                        {"field": "tags", "op": "includes_any", "value": ["vip"],
                         "within_days": 30}]},
    ],
}


def _invalid_example() -> str:
    """The 422 body the API answers `INVALID_EXAMPLE` with (streams.api.segments)."""
    try:
        parse_definition(INVALID_EXAMPLE, segment_id="big-spenders", version=1, slot=0)
    except DefinitionError as exc:
        details = exc.details
    else:  # pragma: no cover - the example must stay invalid
        raise AssertionError("INVALID_EXAMPLE became valid")
    body = {"error": {"code": "invalid_definition", "message": "the segment definition breaks "
                      "a rule; details name each problem by path", "details": details}}
    return "Sent:\n\n" + _json_block(INVALID_EXAMPLE) + "\n\nAnswered (422):\n\n" + \
        _json_block(body)


def _field_row(spec: FieldSpec) -> tuple[str, ...]:
    return (f"`{spec.name}`", spec.type, ", ".join(f"`{op}`" for op in spec.operators),
            "yes" if spec.windowed else "", "yes" if spec.casefold else "", spec.description)


def _fields() -> str:
    return table(("field", "type", "operators", "`within_days`", "ignores case", "meaning"),
                 [_field_row(spec) for spec in (*FIELDS, PROPERTY_FIELD)])


def _operators() -> str:
    specs = (*FIELDS, PROPERTY_FIELD)
    rows = []
    for op, (value, example) in OPERATOR_VALUES.items():
        types = sorted({spec.type for spec in specs if op in spec.operators})
        rows.append((f"`{op}`", ", ".join(types), value, f"`{example}`" if example else ""))
    return table(("operator", "field types", "`value`", "example"), rows)


def _membership_record() -> str:
    schema = load_schema("membership")
    return fields_table(schema, schema["$defs"])


def _membership_example(kind: str) -> Callable[[], str]:
    return lambda: _json_block(MEMBERSHIP_EXAMPLES[kind])


def _openapi() -> Schema:
    """The API's OpenAPI description, plus `x-open-routes`: the routes it does not describe
    (health, metrics, the description itself, the page), as (path, methods)."""
    from starlette.routing import Route

    from streams.api import ApiDeps
    from streams.api.app import create_app

    # The description needs no running services: routes only read their deps when called.
    app = create_app(cast(ApiDeps, SimpleNamespace(checks=None, metrics=None)))
    spec: Schema = app.openapi()
    spec["x-open-routes"] = sorted(
        (route.path, sorted((route.methods or set()) - {"HEAD"}))
        for route in app.routes
        if isinstance(route, Route) and route.path not in spec["paths"])
    return spec


def _body_of(operation: Schema) -> str:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return ""
    ref = content["schema"].get("$ref")
    return f"[`{ref.rsplit('/', 1)[-1]}`](#bodies)" if ref else "event or list of events"


def _routes() -> str:
    spec = _openapi()
    rows = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            params = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            query = "?" + "&".join(f"{p}=" for p in params) if params else ""
            auth = "bearer" if op.get("security") else "open"
            codes = ", ".join(sorted(op["responses"]))
            rows.append((f"`{method.upper()} {path}{query}`", auth, op.get("summary", ""),
                         _body_of(op), codes))
    for path, methods in spec["x-open-routes"]:
        does, statuses = _OPEN_ROUTES.get(path, ("", "200"))
        rows.append((f"`{' '.join(methods)} {path}`", "open", does, "", statuses))
    return table(("route", "auth", "does", "body", "statuses"), rows)


_OPEN_ROUTES: Final = {
    "/": ("the Segment List Builder page", "200"),
    "/docs": ("Swagger UI over `/openapi.json`", "200"),
    "/openapi.json": ("this API's OpenAPI description", "200"),
    "/health/live": ("liveness: the process answers", "200"),
    "/health/ready": ("readiness: Kafka and Redis answer and no role waits out an outage; "
                      "the checks and reasons in the body", "200, 503"),
    "/metrics": ("Prometheus text exposition", "200"),
}


def _bodies() -> str:
    spec = _openapi()
    schemas = spec["components"]["schemas"]
    parts = []
    for name in sorted(schemas):
        schema = schemas[name]
        intro = _description(schema, {})
        parts.append(f"**`{name}`**" + (f": {intro}" if intro else ""))
        parts.append(fields_table(schema, schemas))
    return "\n\n".join(parts)


def _statuses() -> str:
    spec = _openapi()
    seen: dict[str, str] = {}
    for operations in spec["paths"].values():
        for op in operations.values():
            for code, answer in op["responses"].items():
                if not code.startswith("2"):
                    seen.setdefault(code, answer.get("description", ""))
    return table(("status", "when"), [(code, seen[code]) for code in sorted(seen)])


SECTIONS: Final[dict[str, dict[str, Callable[[], str]]]] = {
    "events.md": {
        "envelope": _envelope, "types": _types, "values": _value_types, "dlq": _dead_letters,
        **{f"event:{t}": (lambda t=t: _event(t)) for t in EVENT_TYPES},  # type: ignore[misc]
    },
    "segments.md": {"limits": _limits, "fields": _fields, "operators": _operators,
                    "invalid": _invalid_example},
    "membership.md": {
        "record": _membership_record,
        **{f"example:{kind}": _membership_example(kind) for kind in MEMBERSHIP_EXAMPLES},
    },
    "api.md": {"routes": _routes, "bodies": _bodies, "statuses": _statuses},
}


class DocsError(ValueError):
    """A doc misses a section the generator writes, or has one it does not know."""


def render(name: str, text: str) -> str:
    """`text` of docs/`name` with every generated section rewritten."""
    sections = SECTIONS[name]
    found = {m["name"] for m in _SECTION.finditer(text)}
    if missing := sorted(set(sections) - found):
        raise DocsError(f"docs/{name} lacks the generated sections {', '.join(missing)}")
    if unknown := sorted(found - set(sections)):
        raise DocsError(f"docs/{name} has sections no generator writes: {', '.join(unknown)}")

    def rewrite(match: re.Match[str]) -> str:
        body = sections[match["name"]]().rstrip("\n") + "\n"
        return f"{match.group(1)}{body}{match.group(4)}"

    return _SECTION.sub(rewrite, text)


def stale(docs_dir: Path = DOCS_DIR) -> list[str]:
    """The docs whose generated sections differ from what the sources give."""
    return [name for name in SECTIONS
            if render(name, (docs_dir / name).read_text()) != (docs_dir / name).read_text()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        names = stale()
        for name in names:
            print(f"docs/{name} is out of date: run python -m streams.local.docs")
        return 1 if names else 0
    for name in SECTIONS:
        path = DOCS_DIR / name
        path.write_text(render(name, path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
