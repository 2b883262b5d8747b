"""With a processor running: events in over HTTP, segments created, edited and deleted, and
membership (sets, counts, the membership topic) following; customers explained; previews."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from streams.broker.topics import TopicNames
from tests.api.conftest import Api
from tests.api.test_auth import assert_error
from tests.streams.helpers import changes, event, read_topic, running_processor, wait_for

BIG = {"name": "Big", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 100}]}]}
BIGGER = {"name": "Big", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 150}]}]}


def order(customer_id: str, total: str) -> dict[str, Any]:
    return event("order.placed", customer_id, f"{customer_id}-o1",
                 {"order_id": f"{customer_id}-order", "total": total})


async def _segment(api: Api, segment_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/segments/{segment_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _live_with(api: Api, segment_id: str, version: int, members: int) -> Any:
    async def check() -> bool:
        s = await _segment(api, segment_id)
        return (s["version"], s["status"], s["member_count"]) == (version, "live", members)
    return check


async def _states(api: Api, *customer_ids: str) -> bool:
    for c in customer_ids:
        if (await api.client.get(f"/customers/{c}")).status_code != 200:
            return False
    return True


async def _with_big_spenders(api: Api) -> None:
    """c-1..c-4 have spent 50, 100, 150, 200; segment `big` (>= 100) created and backfilled."""
    orders = [order(f"c-{n}", str(n * 50)) for n in range(1, 5)]
    sent = await api.client.post("/events", json=orders)
    assert sent.status_code == 202 and sent.json() == {"accepted": 4}
    await wait_for(lambda: _states(api, "c-1", "c-4"), what="states")
    created = await api.client.post("/segments", json={**BIG, "id": "big"})
    assert created.status_code == 201 and created.json()["version"] == 1
    await wait_for(_live_with(api, "big", 1, 3), what="backfill of big")
    assert (await _segment(api, "big"))["progress"] == 1.0


def _summary(records: list[Any]) -> list[tuple[str, str, int, str]]:
    return sorted((c["customer_id"], c["type"], c["segment_version"], c["reason"])
                  for c in changes(records))


async def test_create_backfills_and_edit_emits_the_difference(api: Api, redis_client: Redis):
    topics = TopicNames(api.settings.topic_prefix)
    async with running_processor(api.settings, redis_client):
        await _with_big_spenders(api)
        assert (await api.client.put("/segments/big", json=BIGGER)).json()["version"] == 2
        await wait_for(_live_with(api, "big", 2, 2), what="edit of big")
        records = await read_topic(api.settings, topics.membership, 4)
    assert _summary(records) == [
        ("c-2", "segment.member_added", 1, "backfill"),
        ("c-2", "segment.member_removed", 2, "backfill"),
        ("c-3", "segment.member_added", 1, "backfill"),
        ("c-4", "segment.member_added", 1, "backfill"),
    ]


async def test_delete_removes_every_member(api: Api, redis_client: Redis):
    topics = TopicNames(api.settings.topic_prefix)
    async with running_processor(api.settings, redis_client):
        await _with_big_spenders(api)
        deleted = await api.client.delete("/segments/big")
        assert deleted.json() == {"id": "big", "version": 1, "name": "Big", "deleted": True}
        records = await read_topic(api.settings, topics.membership, 6, timeout=10)
    assert [r for r in _summary(records) if r[1] == "segment.member_removed"] == [
        (f"c-{n}", "segment.member_removed", 1, "segment_deleted") for n in (2, 3, 4)]


async def test_customer_is_explained_condition_by_condition(api: Api, redis_client: Redis):
    us_gold = {"id": "us-gold", "name": "US gold", "groups": [
        {"conditions": [{"field": "billing_country", "op": "eq", "value": "US"},
                        {"field": "total_spent", "op": "gte", "value": 500}]},
        {"conditions": [{"field": "order_count", "op": "gte", "value": 1}]}]}
    never = {"id": "never", "name": "Never", "groups": [
        {"conditions": [{"field": "tags", "op": "includes_any", "value": ["vip"]}]}]}
    async with running_processor(api.settings, redis_client):
        for body in (us_gold, never):
            assert (await api.client.post("/segments", json=body)).status_code == 201
        profile = event("customer.created", "c-x", "c-x-1",
                        {"email": "x@example.com", "billing": {"country": "US"}})
        assert (await api.client.post("/events", json=profile)).status_code == 202
        assert (await api.client.post("/events", json=order("c-x", "120"))).status_code == 202
        await wait_for(_has_segments(api, "c-x", ["us-gold"]), what="c-x in us-gold")
    body = (await api.client.get("/customers/c-x")).json()
    assert body["customer_id"] == "c-x" and body["segments"] == ["us-gold"]
    features = body["features"]
    assert (features["email"], features["order_count"], features["total_spent"]) == (
        "x@example.com", 1, 120.0)
    assert features["contact_type"] == "customer" and features["segments"] == ["us-gold"]
    gold = body["explain"]["us-gold"]
    assert (gold["member"], gold["matches_now"], gold["version"]) == (True, True, 1)
    assert [(c["path"], c["result"]) for g in gold["groups"] for c in g["conditions"]] == [
        ("groups[0].conditions[0]", True), ("groups[0].conditions[1]", False),
        ("groups[1].conditions[0]", True)]
    assert [g["result"] for g in gold["groups"]] == [False, True]
    assert gold["groups"][0]["conditions"][1]["value"] == 500
    assert body["explain"]["never"]["member"] is False
    assert_error(await api.client.get("/customers/ghost"), 404, "customer_not_found")


def _has_segments(api: Api, customer_id: str, segments: list[str]) -> Any:
    async def check() -> bool:
        response = await api.client.get(f"/customers/{customer_id}")
        return response.status_code == 200 and response.json()["segments"] == segments
    return check


async def test_preview_counts_stored_customers(api: Api, redis_client: Redis):
    async with running_processor(api.settings, redis_client):
        orders = [order(f"p-{n}", str(n * 10)) for n in range(1, 21)]  # 10 .. 200
        assert (await api.client.post("/events", json=orders)).status_code == 202
        await wait_for(lambda: _states(api, *(f"p-{n}" for n in range(1, 21))), what="states")
    preview = await api.client.post("/segments/preview", params={"sample": 3}, json={
        "name": "p", "groups": [{"conditions": [
            {"field": "total_spent", "op": "gt", "value": 150}]}]})
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["count"], body["scanned"], body["customers"], body["complete"]) == (
        5, 20, 20, True)
    assert body["estimated_count"] == 5 and "note" not in body
    assert len(body["sample"]) == 3 and set(body["sample"]) <= {f"p-{n}" for n in range(16, 21)}
    invalid = await api.client.post("/segments/preview", json={"name": "p", "groups": [
        {"conditions": [{"field": "total_spent", "op": "gt", "value": "lots"}]}]})
    assert assert_error(invalid, 422)["details"][0]["path"] == "groups[0].conditions[0].value"
    assert (await api.client.get("/segments")).json() == {"segments": []}  # nothing created


async def test_a_customer_shows_its_next_re_evaluation_and_the_condition_it_is_for(
    api: Api, redis_client: Redis
):
    day = 86_400_000
    placed = 1_798_000_000_000  # 2026-12-23T08:26:40Z
    lapsing = {"id": "lapsing", "name": "Ordered within 30 days", "groups": [{"conditions": [
        {"field": "order_count", "op": "gte", "value": 1},
        {"field": "last_order_at", "op": "within_last", "value": {"days": 30}}]}]}
    assert (await api.client.post("/segments", json=lapsing)).status_code == 201
    async with running_processor(api.settings, redis_client):
        at = "2026-12-23T08:26:40Z"
        placed_event = event("order.placed", "c-next", "c-next-o1",
                             {"order_id": "c-next-o1", "total": "5"}, at=at)
        assert (await api.client.post("/events", json=placed_event)).status_code == 202
        await wait_for(lambda: _states(api, "c-next"), what="c-next stored")
        body = (await api.client.get("/customers/c-next")).json()
    flip = "2027-01-22T08:26:40.001Z"  # 30 days and 1 ms after the order
    assert placed + 30 * day + 1 == 1_800_592_000_001
    assert body["next_evaluation"] == {"at": flip, "scheduled": True, "conditions": [{
        "segment_id": "lapsing", "path": "groups[0].conditions[1]", "field": "last_order_at",
        "op": "within_last", "value": {"days": 30}, "within_days": None, "changes_at": flip}]}
    assert body["segments"] == ["lapsing"]
