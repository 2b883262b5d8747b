"""Member pages over many HSCAN steps and partitions; HTTP event ingestion, all or nothing."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis

from streams.broker.topics import TopicNames
from streams.storage.state import PartitionWrite, StateStore
from tests.api.conftest import Api
from tests.api.test_auth import assert_error
from tests.streams.helpers import changes, event, read_topic, slot_of

SEGMENT = {"id": "many", "name": "Many", "groups": [{"conditions": [
    {"field": "order_count", "op": "gte", "value": 1}]}]}


async def _members(redis: Redis, api: Api, per_partition: dict[int, int]) -> set[str]:
    """Write memberships as the processor does (masks and counts), with non-members between."""
    store = StateStore(redis, api.settings.key_prefix)
    slot = await slot_of(redis, api.settings.key_prefix, "many")
    everyone = set()
    for p, n in per_partition.items():
        write = PartitionWrite()
        for i in range(n):
            write.set_mask(f"m-{p}-{i}", 1 << slot)
            write.set_mask(f"other-{p}-{i}", 1 << (slot + 1))  # a member of another segment
            write.count("many", 1)
            everyone.add(f"m-{p}-{i}")
        await store.commit(p, write)
    return everyone


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
async def test_member_pages_cover_each_member_once(api: Api, redis_client: Redis, limit: int):
    assert (await api.client.post("/segments", json=SEGMENT)).status_code == 201
    everyone = await _members(redis_client, api, {0: 1500, 1: 0, 2: 3, 3: 60})
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/segments/many/members", params=params)).json()
        assert len(page["members"]) <= limit
        seen += page["members"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None or pages > 3000:
            break
    assert len(seen) == len(set(seen)) and set(seen) == everyone
    assert pages >= len(everyone) // limit
    assert (await api.client.get("/segments/many")).json()["member_count"] == len(everyone)


async def test_member_cursor_must_be_one_handed_out(api: Api):
    assert (await api.client.post("/segments", json=SEGMENT)).status_code == 201
    response = await api.client.get("/segments/many/members", params={"cursor": "nonsense"})
    assert assert_error(response, 400, "invalid_cursor")["details"][0]["path"] == "cursor"
    assert_error(await api.client.get("/segments/many/members", params={"limit": 1001}), 422)


async def test_valid_events_go_to_their_topics(api: Api):
    topics = TopicNames(api.settings.topic_prefix)
    profile = event("customer.created", "c-1", "e-1", {"email": "a@example.com", "extra": 1})
    placed = event("order.placed", "c-1", "e-2", {"order_id": "o-1", "total": "19.90"})
    one = await api.client.post("/events", json=profile)
    assert one.status_code == 202 and one.json() == {"accepted": 1}
    assert (await api.client.post("/events", json=[placed])).json() == {"accepted": 1}
    customers = await read_topic(api.settings, topics.customers, 1)
    orders = await read_topic(api.settings, topics.orders, 1)
    assert changes(customers) == [profile] and changes(orders) == [placed]
    assert {r.key for r in customers + orders} == {b"c-1"}


async def test_one_invalid_event_rejects_the_request(api: Api):
    topics = TopicNames(api.settings.topic_prefix)
    good = event("order.placed", "c-2", "e-1", {"order_id": "o-1", "total": 5})
    no_total = event("order.placed", "c-2", "e-2", {"order_id": "o-2"})
    naive = {**good, "event_id": "e-3", "occurred_at": "2026-11-28T17:32:00"}
    unknown = {**good, "type": "order.teleported"}
    response = await api.client.post("/events", json=[good, no_total, naive, unknown, "x"])
    error = assert_error(response, 400, "invalid_events")
    assert [(d["index"], d["code"]) for d in error["details"]] == [
        (1, "missing_field"), (2, "invalid_value"), (3, "unknown_type"), (4, "wrong_type")]
    assert "$.data.total" in error["details"][0]["reason"]
    assert_error(await api.client.post("/events", json=[]), 400, "no_events")
    assert_error(await api.client.post("/events", content=b"[{"), 400, "invalid_json")
    for topic in topics.inputs:
        assert await read_topic(api.settings, topic, 0, timeout=0.5) == []


async def test_events_keep_their_bytes_meaning(api: Api):
    topics = TopicNames(api.settings.topic_prefix)
    placed = event("order.placed", "c-3", "e-1", {"order_id": "o", "total": 10.1})
    assert (await api.client.post("/events", json=placed)).status_code == 202
    [record] = await read_topic(api.settings, topics.orders, 1)
    assert orjson.loads(record.value)["data"]["total"] == 10.1
