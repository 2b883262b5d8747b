"""Bearer token on every route but health and metrics; one error shape everywhere."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import Api


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdDp0ZXN0"},
    {"Authorization": "Bearer"},
])
@pytest.mark.parametrize("path", ["/segments", "/fields", "/customers/c-1"])
async def test_routes_need_the_token(api: Api, headers: dict, path: str):
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as anonymous:
        response = await anonymous.get(path)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_writes_need_the_token_too(api: Api):
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        response = await anonymous.post("/events", json={"anything": 1})
    assert_error(response, 401, "unauthorized")


async def test_health_and_metrics_are_open(api: Api):
    async with httpx.AsyncClient(base_url=api.url) as anonymous:
        live = await anonymous.get("/health/live")
        ready = await anonymous.get("/health/ready")
        metrics = await anonymous.get("/metrics")
    assert live.json() == {"status": "live"}
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "kafka": "ok"}
    assert metrics.status_code == 200 and "segstream_test 1" in metrics.text


async def test_framework_errors_have_the_error_shape(api: Api):
    assert_error(await api.client.get("/nowhere"), 404, "not_found")
    assert_error(await api.client.patch("/segments"), 405, "method_not_allowed")
    invalid = assert_error(await api.client.get("/segments/x/members", params={"limit": 0}),
                           422, "invalid_request")
    assert invalid["details"][0]["path"] == "query.limit"
    assert_error(await api.client.post("/segments", content=b"{nope"), 400, "invalid_json")


async def test_openapi_with_the_token(api: Api):
    schema = (await api.client.get("/openapi.json")).json()
    assert {"/segments", "/segments/{segment_id}", "/segments/{segment_id}/members",
            "/segments/preview", "/customers/{customer_id}", "/events", "/fields"} <= set(
        schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_fields_lists_the_catalog(api: Api):
    fields = (await api.client.get("/fields")).json()["fields"]
    by_name = {f["field"]: f for f in fields}
    assert "within_last" in by_name["last_order_at"]["operators"]
    assert by_name["total_spent"]["within_days"] is True
    assert "properties.<name>" in by_name
