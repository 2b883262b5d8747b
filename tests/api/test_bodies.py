"""Request bodies: a key the API does not know is a 422 that names it (a typo is not silently
dropped), on every route with a body; JSON is read the same way on all of them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.test_auth import assert_error

SEGMENT = {"name": "Big", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 100}]}]}


def _named(error: dict[str, Any]) -> list[str]:
    return [d["path"] for d in error["details"]]


async def test_a_typo_in_a_new_segment_is_refused_by_name(api: Api):
    typo = {**SEGMENT, "auto_responer": {"profile_id": "p", "list_id": "l"}}
    error = assert_error(await api.client.post("/segments", json=typo), 422, "invalid_definition")
    assert error["details"] == [{"path": "auto_responer", "message": "unknown field"}]
    assert (await api.client.get("/segments")).json() == {"segments": []}


async def test_a_typo_in_a_replaced_segment_is_refused_by_name(api: Api):
    assert (await api.client.post("/segments", json={**SEGMENT, "id": "big"})).status_code == 201
    typo = {**SEGMENT, "name": "Bigger", "grups": []}
    error = assert_error(await api.client.put("/segments/big", json=typo), 422,
                         "invalid_definition")
    assert _named(error) == ["grups"]
    kept = (await api.client.get("/segments/big")).json()
    assert (kept["name"], kept["version"]) == ("Big", 1)


async def test_unknown_keys_inside_auto_responder_and_preview_are_named(api: Api):
    responder = {"profile_id": "p", "list_id": "l", "tag": "vip"}
    error = assert_error(await api.client.post(
        "/segments", json={**SEGMENT, "auto_responder": responder}), 422, "invalid_definition")
    assert _named(error) == ["auto_responder.tag"]
    error = assert_error(await api.client.post(
        "/segments/preview", json={**SEGMENT, "sample": 3}), 422, "invalid_definition")
    assert _named(error) == ["sample"]


async def test_the_domain_still_judges_conditions_after_the_shape(api: Api):
    body = {**SEGMENT, "groups": [*SEGMENT["groups"], {"conditions": [
        {"field": "order_count", "op": "gte", "value": 1, "within": 3}]}]}
    error = assert_error(await api.client.post("/segments", json=body), 422, "invalid_definition")
    assert _named(error) == ["groups[1].conditions[0].within"]


async def test_an_unknown_key_in_a_profile_is_refused_by_name(api: Api):
    body = {"name": "Shop", "provider": "sendlane", "credentials": {"api_token": "t0ken"},
            "password": "hunter2"}
    answer = await api.client.post("/providers/profiles", json=body)
    error = assert_error(answer, 422, "invalid_profile")
    assert error["details"] == [{"path": "password", "message": "unknown field"}]
    assert "hunter2" not in answer.text and "t0ken" not in answer.text
    assert (await api.client.get("/providers/profiles")).json() == {"profiles": []}


async def test_a_profile_of_the_wrong_kinds_names_each_field(api: Api):
    body = {"name": "Shop", "provider": "sendlane", "credentials": {"api_token": 5},
            "base_url": 7}
    answer = await api.client.post("/providers/profiles", json=body)
    error = assert_error(answer, 422, "invalid_profile")
    assert sorted(_named(error)) == ["base_url", "credentials.api_token"]


async def test_an_unknown_key_in_a_reconcile_is_refused_by_name(api: Api):
    body = {"segment_id": "vip", "dryrun": True}
    answer = await api.client.post("/providers/profiles/any/reconcile", json=body)
    error = assert_error(answer, 422, "invalid_reconcile")
    assert error["details"] == [{"path": "dryrun", "message": "unknown field"}]


BODY_ROUTES = [("POST", "/segments"), ("PUT", "/segments/big"), ("POST", "/segments/preview"),
               ("POST", "/events"), ("POST", "/providers/profiles"),
               ("POST", "/providers/profiles/any/reconcile")]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_every_body_is_read_as_json_the_same_way(api: Api, method: str, path: str):
    send = api.client.request
    assert_error(await send(method, path, content=b"{nope"), 400, "invalid_json")
    assert_error(await send(method, path, content=b""), 400, "invalid_json")
    assert_error(await send(method, path, content=b'{"value": NaN}'), 400, "invalid_json")
    assert_error(await send(method, path, content=b"{}", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")
    assert_error(await send(method, path, content=b" " * (4 << 20) + b"{}"), 413, "too_large")
