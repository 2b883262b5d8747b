"""``POST /providers/profiles/{id}/reconcile`` on the API app called in-process, against fake
Mailchimp.

The segment's members are written straight into the processor's layout: member
sets per partition and feature states at each customer's owner partition.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from streams.broker.partitioning import owner_partition
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from tests.api.conftest import in_process_api
from tests.providers.harness import FAST_POLICIES, Harness, fast_retry
from tests.streams.helpers import seed_member, slot_of

SECRET = "correct horse battery staple, and then some"


@dataclass
class Setup:
    api: httpx.AsyncClient
    store: ProfileStore
    definitions: DefinitionStore
    redis: Redis
    prefix: str
    partitions: int


@pytest.fixture
async def setup(api_settings: Settings, redis_client: Redis) -> AsyncIterator[Setup]:
    prefix = api_settings.key_prefix
    store = ProfileStore(redis_client, prefix, SECRET, limits=ProviderLimits(FAST_POLICIES),
                         retry=fast_retry(3), client_options={"page_size": 2})
    async with in_process_api(api_settings, redis_client, store) as client:
        yield Setup(client, store, DefinitionStore(redis_client, prefix), redis_client, prefix,
                    api_settings.partitions)


async def add_member(s: Setup, segment_id: str, customer_id: str, email: str | None) -> None:
    partition = owner_partition(customer_id, s.partitions)
    slot = await slot_of(s.redis, s.prefix, segment_id)
    await seed_member(s.redis, s.prefix, partition, slot, segment_id, customer_id, email)


async def put_segment(s: Setup, segment_id: str, responder: dict[str, str] | None) -> None:
    body: dict[str, Any] = {"name": segment_id, "groups": [{"conditions": [
        {"field": "total_spent", "op": "gt", "value": 300}]}]}
    if responder is not None:
        body["auto_responder"] = responder
    await s.definitions.put(segment_id, body)


async def make_profile(s: Setup, harness: Harness) -> str:
    profile = await s.store.create("shop", harness.provider, harness.fake.credentials(),
                                   harness.base_url)
    return profile.id


async def test_reconcile_route_dry_run_then_repair(setup: Setup, mailchimp: Harness) -> None:
    s = setup
    profile_id = await make_profile(s, mailchimp)
    list_id, segments = mailchimp.seed_list("Shop", "VIP")
    vip = segments["VIP"]
    await put_segment(s, "vip", {"profile_id": profile_id, "list_id": list_id,
                                 "segment_id": vip})
    for n in range(5):
        await add_member(s, "vip", f"c-{n}", f"c{n}@shop.test")
    await add_member(s, "vip", "c-nomail", None)
    for email in ("c0@shop.test", "stale@shop.test"):
        mailchimp.seed_member(list_id, email)
    fake_segment = mailchimp.fake.state.lists[list_id].segments[int(vip)]
    fake_segment.members.clear()
    async with mailchimp.client() as client:
        await client.add_to_segment(list_id, vip, ["c0@shop.test", "stale@shop.test"])
    url = f"/providers/profiles/{profile_id}/reconcile"

    dry = await s.api.post(url, json={"segment_id": "vip", "dry_run": True})
    assert dry.status_code == 200, dry.text
    want_added = [f"c{n}@shop.test" for n in range(1, 5)]
    assert dry.json() == {"added": want_added, "removed": ["stale@shop.test"], "failed": {},
                          "without_email": 1, "dry_run": True}
    assert mailchimp.fake.state.segment_emails(list_id, vip) == {"c0@shop.test",
                                                                "stale@shop.test"}
    assert mailchimp.fake.state.member(list_id, "c1@shop.test") is None

    real = await s.api.post(url, json={"segment_id": "vip"})
    assert real.status_code == 200, real.text
    assert real.json() == {"added": want_added, "removed": ["stale@shop.test"], "failed": {},
                           "without_email": 1, "dry_run": False}
    assert mailchimp.fake.state.segment_emails(list_id, vip) == {
        f"c{n}@shop.test" for n in range(5)}
    assert mailchimp.subscribed(list_id, "stale@shop.test")
    for secret in mailchimp.fake.credentials().values():
        assert secret not in real.text

    again = await s.api.post(url, json={"segment_id": "vip"})
    assert again.json()["added"] == [] and again.json()["removed"] == []


async def test_reconcile_route_refusals(setup: Setup, mailchimp: Harness) -> None:
    s = setup
    profile_id = await make_profile(s, mailchimp)
    list_id, _ = mailchimp.seed_list("Shop")
    await put_segment(s, "plain", None)
    await put_segment(s, "theirs", {"profile_id": "someone-else", "list_id": list_id})
    url = f"/providers/profiles/{profile_id}/reconcile"
    cases = [
        (url, {"segment_id": "plain"}, 422, "no_auto_responder"),
        (url, {"segment_id": "theirs"}, 422, "other_profile"),
        (url, {"segment_id": "missing"}, 404, "segment_not_found"),
        (url, {"dry_run": True}, 422, "invalid_reconcile"),
        (url, {"segment_id": "plain", "dry_run": "yes"}, 422, "invalid_reconcile"),
        ("/providers/profiles/nope/reconcile", {"segment_id": "plain"}, 404,
         "profile_not_found"),
    ]
    for path, body, status, code in cases:
        answer = await s.api.post(path, json=body)
        assert answer.status_code == status, (body, answer.text)
        error = answer.json()["error"]
        assert error["code"] == code and {"code", "message", "details"} <= set(error)
    bad_json = await s.api.post(url, content=b"{")
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
