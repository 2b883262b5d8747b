"""Segment definitions through the API: every 422 kind names its path; ids, conflicts, 404s."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.api.conftest import Api
from tests.api.test_auth import assert_error


def seg(*groups: list[dict], name: str = "S") -> dict:
    return {"name": name, "groups": [{"conditions": list(g)} for g in groups]}


SPENT = {"field": "total_spent", "op": "gte", "value": 100}

INVALID = [
    (seg([SPENT], [{"field": "nope", "op": "eq", "value": 1}]), "groups[1].conditions[0].field"),
    (seg([SPENT], [{"field": "order_count", "op": "contains", "value": 1}]),
     "groups[1].conditions[0].op"),
    (seg([SPENT], [{"field": "order_count", "op": "gte", "value": "many"}]),
     "groups[1].conditions[0].value"),
    (seg([{"field": "last_order_at", "op": "within_last", "value": {"weeks": 2}}]),
     "groups[0].conditions[0].value"),
    (seg([{"field": "email", "op": "eq", "value": "a@b.c", "within_days": 3}]),
     "groups[0].conditions[0].within_days"),
    (seg([SPENT, {"field": "order_count", "op": "gte", "value": 1, "extra": 1}]),
     "groups[0].conditions[1].extra"),
    (seg(*[[SPENT]] * 6), "groups"),
    (seg([SPENT] * 5, [SPENT] * 5), "groups"),
    ({"name": "S", "groups": []}, "groups"),
    (seg([]), "groups[0].conditions"),
    (seg([{"field": "segments", "op": "includes_any", "value": ["ghost"]}]),
     "groups[0].conditions[0].value"),
    ({"groups": [{"conditions": [SPENT]}]}, "name"),
    ({"name": "S", "groups": [{"conditions": [SPENT]}], "auto_responder": {"list_id": "l"}},
     "auto_responder.profile_id"),
    ([1, 2], ""),
]


@pytest.mark.parametrize(("body", "path"), INVALID)
async def test_invalid_definitions_name_the_path(api: Api, body: object, path: str):
    error = assert_error(await api.client.post("/segments", json=body), 422, "invalid_definition")
    assert path in [d["path"] for d in error["details"]], error
    assert all(d["message"] for d in error["details"])
    assert (await api.client.get("/segments")).json() == {"segments": []}


async def test_every_problem_is_listed(api: Api):
    body = seg([{"field": "nope", "op": "eq"}], [{"field": "order_count", "op": "gte"}])
    error = assert_error(await api.client.post("/segments", json=body), 422)
    assert {d["path"] for d in error["details"]} == {
        "groups[0].conditions[0].field", "groups[1].conditions[0].value"}


async def test_cycles_and_self_references_are_rejected(api: Api):
    a = {**seg([SPENT]), "id": "a"}
    assert (await api.client.post("/segments", json=a)).status_code == 201
    b = {**seg([{"field": "segments", "op": "includes_any", "value": ["a"]}]), "id": "b"}
    assert (await api.client.post("/segments", json=b)).status_code == 201
    cycle = seg([SPENT], [{"field": "segments", "op": "includes_all", "value": ["b"]}])
    error = assert_error(await api.client.put("/segments/a", json=cycle), 422)
    assert {(d["segment_id"], d["path"]) for d in error["details"]} == {
        ("a", "groups[1].conditions[0].value"), ("b", "groups[0].conditions[0].value")}
    assert "cycle" in error["details"][0]["message"]
    itself = seg([{"field": "segments", "op": "includes_none", "value": ["a"]}])
    error = assert_error(await api.client.put("/segments/a", json=itself), 422)
    assert error["details"][0]["path"] == "groups[0].conditions[0].value"
    in_use = assert_error(await api.client.delete("/segments/a"), 409, "segment_in_use")
    assert in_use["details"][0]["segment_id"] == "b"


async def test_ids_versions_conflicts_and_unknown_segments(api: Api):
    created = await api.client.post("/segments", json=seg([SPENT], name="Big Spenders!"))
    assert created.status_code == 201
    body = created.json()
    assert body["id"].startswith("big-spenders-") and body["version"] == 1
    assert body["member_count"] == 0 and body["groups"] == [{"conditions": [SPENT]}]
    stored_at = datetime.fromisoformat(body["updated_at"].replace("Z", "+00:00"))
    assert abs(stored_at.timestamp() - time.time()) < 60
    again = await api.client.post("/segments", json={**seg([SPENT]), "id": body["id"]})
    assert_error(again, 409, "segment_exists")
    assert_error(await api.client.post("/segments", json={**seg([SPENT]), "id": "a b"}), 422)
    replaced = await api.client.put(f"/segments/{body['id']}", json=seg([SPENT], name="Renamed"))
    assert replaced.json()["version"] == 2 and replaced.json()["name"] == "Renamed"
    same = await api.client.put(f"/segments/{body['id']}", json=seg([SPENT], name="Renamed"))
    assert same.json()["version"] == 2  # nothing changed, no new version
    assert same.json()["updated_at"] == replaced.json()["updated_at"] >= body["updated_at"]
    mismatch = await api.client.put(f"/segments/{body['id']}", json={**seg([SPENT]), "id": "x"})
    assert assert_error(mismatch, 422)["details"][0]["path"] == "id"
    listed = (await api.client.get("/segments")).json()["segments"]
    assert [s["id"] for s in listed] == [body["id"]]
    assert listed[0]["updated_at"] == replaced.json()["updated_at"]
    for response in (await api.client.get("/segments/ghost"),
                     await api.client.put("/segments/ghost", json=seg([SPENT])),
                     await api.client.delete("/segments/ghost"),
                     await api.client.get("/segments/ghost/members")):
        assert_error(response, 404, "segment_not_found")
    deleted = await api.client.delete(f"/segments/{body['id']}")
    assert deleted.json() == {"id": body["id"], "version": 2, "name": "Renamed", "deleted": True}
    assert_error(await api.client.get(f"/segments/{body['id']}"), 404)
