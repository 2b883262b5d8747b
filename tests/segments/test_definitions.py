"""Definition validation: the rules, every problem with its path, normalized values."""

from __future__ import annotations

from typing import Any

import pytest

from segments.catalog import FIELD_CATALOG, FIELDS, field_spec
from segments.definitions import (
    DefinitionError,
    SegmentDefinition,
    check_graph,
    find_cycles,
    parse_definition,
)
from tests.segments.helpers import DAY, HOUR, cond, segment


def problems(body: Any, segment_id: str = "s") -> dict[str, str]:
    with pytest.raises(DefinitionError) as info:
        parse_definition(body, segment_id=segment_id, version=1, slot=0)
    return {d["path"]: d["message"] for d in info.value.details}


def one_condition(raw: dict[str, Any]) -> dict[str, Any]:
    return {"name": "n", "groups": [{"conditions": [raw]}]}


def value_problem(raw: dict[str, Any]) -> str:
    found = problems(one_condition(raw))
    assert list(found) == ["groups[0].conditions[0].value"], found
    return found["groups[0].conditions[0].value"]


def test_the_contract_example_parses() -> None:
    body = {
        "name": "Lapsed VIPs",
        "groups": [
            {"conditions": [
                {"field": "total_spent", "op": "gte", "value": 500},
                {"field": "last_order_at", "op": "not_within_last", "value": {"days": 60}}]},
            {"conditions": [
                {"field": "products_purchased", "op": "includes_any", "value": ["p-gold"]}]}],
        "auto_responder": {"profile_id": "p", "list_id": "l", "segment_id": "t"},
    }
    d = parse_definition(body, segment_id="vip", version=3, slot=7)
    assert (d.id, d.name, d.version, d.slot) == ("vip", "Lapsed VIPs", 3, 7)
    assert [[c.field for c in g] for g in d.groups] == [
        ["total_spent", "last_order_at"], ["products_purchased"]]
    assert d.groups[0][0].value == 5_000_000
    assert d.groups[0][1].value == 60 * DAY
    assert d.groups[1][0].value == frozenset({"p-gold"})
    assert d.reads == {"total_spent", "last_order_at", "products_purchased"}
    assert d.time_relative and d.refs == frozenset()
    assert d.raw is body and d.auto_responder == body["auto_responder"]


def test_every_problem_is_listed_with_its_path() -> None:
    found = problems({
        "groups": [
            {"conditions": [
                {"field": "total_spent", "op": "between", "value": [100, 10]},
                {"field": "shoe_size", "op": "eq", "value": 9}]},
            {"conditions": [
                {"field": "email", "op": "gte", "value": "a"},
                {"field": "order_count", "op": "gte", "value": 1, "within_days": 400}]},
            {"conditions": []},
        ],
        "auto_responder": {"list_id": 5},
    })
    assert found == {
        "name": "a segment needs a name (non-empty text)",
        "groups[0].conditions[0].value":
            "`between` needs two numbers, low first, e.g. [10, 100]; 100 is above 10",
        "groups[0].conditions[1].field": "`shoe_size` is not a field; GET /fields lists them",
        "groups[1].conditions[0].op": "`gte` does not work on `email`; it takes: eq, neq, in, "
                                      "not_in, contains, starts_with, ends_with, exists, "
                                      "not_exists",
        "groups[1].conditions[1].within_days":
            "`within_days` must be a whole number of days from 1 to 366",
        "groups[2].conditions": "a group needs at least one condition",
        "auto_responder.profile_id": "`profile_id` is required (an id)",
        "auto_responder.list_id": "`list_id` is required (an id)",
    }


def test_limits_on_groups_and_conditions() -> None:
    many = [{"conditions": [cond("order_count", "gte", 1)] * 2} for _ in range(6)]
    found = problems({"name": "n", "groups": many})
    assert found["groups"].startswith("a segment has at most 9 conditions in all; this one has 12")
    found = problems({"name": "n", "groups": [{"conditions": [cond("email", "exists")]}] * 6})
    assert found == {"groups": "a segment has at most 5 groups; this one has 6"}
    assert problems({"name": "n", "groups": []}) == {
        "groups": "a segment needs at least one condition"}
    nine = [{"conditions": [cond("email", "exists")] * 3} for _ in range(3)]
    assert len(segment(*[g["conditions"] for g in nine]).groups) == 3


@pytest.mark.parametrize(("body", "path"), [
    ({"name": "n"}, "groups"),
    ({"name": "n", "groups": {"conditions": []}}, "groups"),
    ({"name": "n", "groups": [[]]}, "groups[0]"),
    ({"name": "n", "groups": [{"conditions": [1]}]}, "groups[0].conditions[0]"),
    ({"name": "n", "groups": [{"conditions": [cond("email", "exists")], "x": 1}]},
     "groups[0].x"),
    ({"name": "n", "groups": [{"conditions": [{**cond("email", "exists"), "valeu": 1}]}]},
     "groups[0].conditions[0].valeu"),
    ({"name": "n", "groups": [{"conditions": [{"op": "exists"}]}]},
     "groups[0].conditions[0].field"),
    ({"name": "n", "groups": [{"conditions": [{"field": "email"}]}]},
     "groups[0].conditions[0].op"),
    ({"name": "", "groups": [{"conditions": [cond("email", "exists")]}]}, "name"),
    ({"name": "x" * 201, "groups": [{"conditions": [cond("email", "exists")]}]}, "name"),
    ({"name": "n", "groups": [{"conditions": [cond("email", "exists")]}],
      "auto_responder": "mailchimp"}, "auto_responder"),
    ({"name": "n", "groups": [{"conditions": [cond("email", "exists")]}],
      "auto_responder": {"profile_id": "p", "list_id": "l", "segment_id": 3}},
     "auto_responder.segment_id"),
])
def test_structural_problems(body: Any, path: str) -> None:
    assert path in problems(body)


def test_body_must_be_an_object() -> None:
    assert problems([1]) == {"": "a segment definition must be a JSON object"}


def test_unknown_field_hints_at_properties() -> None:
    found = problems(one_condition(cond("custom.plan", "eq", "x")))
    assert "properties.<name>" in found["groups[0].conditions[0].field"]
    found = problems(one_condition(cond("properties.", "eq", "x")))
    assert "groups[0].conditions[0].field" in found


@pytest.mark.parametrize(("raw", "message"), [
    (cond("total_spent", "between", [1]), "`between` needs two numbers, low first"),
    (cond("total_spent", "between", ["a", 2]), "`between` needs two numbers, low first"),
    (cond("order_count", "gt", -1), "`gt` on `order_count` needs a whole number, 0 or more"),
    (cond("order_count", "gt", 1.5), "needs a whole number"),
    (cond("order_count", "eq", True), "needs a whole number"),
    (cond("total_spent", "gte", "lots"), 'needs an amount such as 50 or "49.99"'),
    (cond("contact_type", "eq", "lead"), "needs `prospect` or `customer`"),
    (cond("email", "eq", 5), "`eq` on `email` needs a non-empty text"),
    (cond("email", "eq", ""), "`eq` on `email` needs a non-empty text"),
    (cond("campaign_id", "neq", ""), "`neq` on `campaign_id` needs a non-empty id"),
    (cond("email", "in", []), "needs a non-empty list, each item a non-empty text"),
    (cond("email", "in", ["a", 1]), "needs a non-empty list, each item a non-empty text"),
    (cond("email", "in", ["a"] * 1001), "at most 1000 items"),
    (cond("email", "contains", ""), "`contains` needs a non-empty text"),
    (cond("email", "exists", "yes"), "`exists` takes no value; leave `value` out"),
    (cond("email", "eq"), "`eq` needs a `value`"),
    (cond("tags", "includes_any", "vip"), "`includes_any` needs a non-empty list of texts"),
    (cond("segments", "includes_all", [""]), "needs a non-empty list of segment ids"),
    (cond("last_order_at", "within_last", {"weeks": 2}), '`within_last` needs {"days": N}'),
    (cond("last_order_at", "within_last", {"days": 0}), "1 to 3650"),
    (cond("last_order_at", "within_last", {"days": 2, "hours": 1}), '{"hours": N}'),
    (cond("last_order_at", "within_last", {"hours": 1.5}), "N a whole number"),
    (cond("created_at", "before", "2026-02-30"), '`before` needs a date such as "2026-01-31"'),
    (cond("created_at", "after", "2026-01-31T09:00:00"), "a date-time with a time zone"),
    (cond("created_at", "after", 20260131), "needs a date"),
    (cond("properties.plan", "gt", "b"), "`gt` on `properties.<name>` needs a number"),
    (cond("properties.plan", "eq", None), "`eq` needs a `value`"),
    (cond("properties.plan", "eq", [1]), "needs a text, a number or true/false"),
])
def test_value_messages(raw: dict[str, Any], message: str) -> None:
    assert message in value_problem(raw)


def test_within_days_rules() -> None:
    def within(raw: dict[str, Any]) -> str:
        return problems(one_condition(raw))["groups[0].conditions[0].within_days"]

    assert "only works on order_count, total_spent" in within(
        cond("refunded_total", "gte", 1, within_days=7))
    assert "whole number of days" in within(cond("order_count", "gte", 1, within_days="7"))
    assert "whole number of days" in within(cond("order_count", "gte", 1, within_days=0))
    d = segment([cond("total_spent", "gt", 0, within_days=366)])
    assert d.groups[0][0].within_days == 366 and d.time_relative


def test_values_are_normalized() -> None:
    d = segment([
        cond("email", "eq", "Ann@Example.COM"),
        cond("campaign_id", "in", ["Spring", "spring"]),
        cond("contact_type", "eq", "Customer"),
        cond("total_spent", "between", ["9.99", 20]),
        cond("created_at", "before", "2026-01-31"),
        cond("created_at", "after", "2026-01-31T09:00:00+01:00"),
        cond("last_order_at", "within_last", {"hours": 6}),
        cond("properties.plan", "in", ["gold", 1, True]),
        cond("properties.seats", "between", [1, 2.5]),
    ])
    values = [c.value for c in d.groups[0]]
    assert values[0] == "ann@example.com"
    assert values[1] == frozenset({"Spring", "spring"})  # ids stay exact
    assert values[2] == "customer"
    assert values[3] == (99_900, 200_000)
    assert values[4] == 1_769_817_600_000
    assert values[5] == 1_769_817_600_000 + 8 * HOUR
    assert values[6] == 6 * HOUR
    assert values[7] == frozenset({("s", "gold"), ("n", 1), ("b", True)})
    assert values[8] == (1, 2.5)
    assert d.reads >= {"properties.plan", "properties.seats"}
    assert d.groups[0][7].property_name == "plan"


def test_a_segment_cannot_build_on_itself() -> None:
    found = problems(one_condition(cond("segments", "includes_any", ["me"])), segment_id="me")
    assert found == {"groups[0].conditions[0].value": "a segment cannot build on itself"}


def make(seg_id: str, slot: int, *refs: str) -> SegmentDefinition:
    conditions = [cond("segments", "includes_any", [r]) for r in refs] or [cond("email", "exists")]
    return segment(conditions, segment_id=seg_id, slot=slot)


def test_check_graph_accepts_a_dag() -> None:
    check_graph({"a": make("a", 0), "b": make("b", 1, "a"), "c": make("c", 2, "a", "b")})


def test_check_graph_names_unknown_references() -> None:
    with pytest.raises(DefinitionError) as info:
        check_graph({"b": make("b", 1, "a", "gone")})
    assert info.value.details == [
        {"segment_id": "b", "path": "groups[0].conditions[0].value",
         "message": "segment `a` does not exist"},
        {"segment_id": "b", "path": "groups[0].conditions[1].value",
         "message": "segment `gone` does not exist"},
    ]


def test_check_graph_names_every_segment_on_a_cycle() -> None:
    defs = {"a": make("a", 0, "c"), "b": make("b", 1, "a"), "c": make("c", 2, "b"),
            "d": make("d", 3, "a")}
    with pytest.raises(DefinitionError) as info:
        check_graph(defs)
    assert {d["segment_id"] for d in info.value.details} == {"a", "b", "c"}
    assert all("cycle: `a` → `c` → `b` → `a`" in d["message"] for d in info.value.details)


def test_find_cycles_handles_long_chains_without_recursion() -> None:
    graph = {str(i): frozenset({str(i + 1)}) for i in range(5000)}
    assert find_cycles(graph) == []
    graph["5000"] = frozenset({"0"})
    assert len(find_cycles(graph)[0]) == 5001


def test_field_catalog_lists_every_contract_field() -> None:
    names = {entry["field"] for entry in FIELD_CATALOG}
    assert names == {f.name for f in FIELDS} | {"properties.<name>"}
    contract = """contact_type email email_domain first_name last_name phone billing_country
        billing_state billing_city billing_postal_code shipping_country shipping_state
        shipping_city shipping_postal_code campaign_id affiliate_id tags created_at order_count
        total_spent average_order_value first_order_at last_order_at last_order_total
        products_purchased categories_purchased decline_count refund_count refunded_total
        chargeback_count active_subscriptions cancelled_subscriptions segments"""
    assert [f.name for f in FIELDS] == contract.split()
    windowed = {e["field"] for e in FIELD_CATALOG if e["within_days"]}
    assert windowed == {"order_count", "total_spent", "decline_count", "refund_count",
                        "chargeback_count", "products_purchased", "categories_purchased",
                        "active_subscriptions"}
    email = field_spec("email")
    assert email is not None and email.casefold
    campaign = field_spec("campaign_id")
    assert campaign is not None and not campaign.casefold
    assert field_spec("properties.anything") is not None
    assert field_spec("nope") is None
