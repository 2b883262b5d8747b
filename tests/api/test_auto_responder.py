"""Profiles behind the API's token, and segments that must name a list the provider sync saw."""

from __future__ import annotations

from redis.asyncio import Redis

from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import serve_fake
from streams.broker.partitioning import owner_partition
from tests.api.conftest import Api
from tests.streams.helpers import seed_member, slot_of

VIP = {"name": "VIP", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gt", "value": 300}]}]}


async def _member(api: Api, redis: Redis, segment_id: str, customer_id: str, email: str) -> None:
    """A member as a processor would have stored it."""
    prefix = api.settings.key_prefix
    partition = owner_partition(customer_id, api.settings.partitions)
    slot = await slot_of(redis, prefix, segment_id)
    await seed_member(redis, prefix, partition, slot, segment_id, customer_id, email)


async def test_segment_auto_responder_must_name_a_synced_list_and_tag(
    api: Api, redis_client: Redis
):
    fake = MailchimpFake()
    list_id, tags = fake.seed_list("Audience", ["VIP"])
    async with serve_fake(fake) as base_url:
        created = await api.client.post("/providers/profiles", json={
            "name": "Shop Mailchimp", "provider": "mailchimp",
            "credentials": fake.credentials(), "base_url": base_url})
        assert created.status_code == 201, created.text
        profile = created.json()
        assert fake.credentials()["api_key"] not in created.text  # only a masked hint
        unauthenticated = await api.client.get("/providers/profiles",
                                               headers={"Authorization": ""})
        assert unauthenticated.status_code == 401
        synced = await api.client.post(f"/providers/profiles/{profile['id']}/sync")
        assert synced.status_code == 200, synced.text
        listed = (await api.client.get(f"/providers/profiles/{profile['id']}/lists")).json()
        assert [(lst["id"], [s["id"] for s in lst["segments"]]) for lst in listed["lists"]] == [
            (list_id, [tags["VIP"]])]

        good = {**VIP, "auto_responder": {"profile_id": profile["id"], "list_id": list_id,
                                          "segment_id": tags["VIP"]}}
        answer = await api.client.post("/segments", json=good)
        assert answer.status_code == 201, answer.text
        bad = {**VIP, "auto_responder": {"profile_id": profile["id"], "list_id": "no-such"}}
        refused = await api.client.post("/segments", json=bad)
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["code"] == "unknown_auto_responder_target"
        assert any(d["path"] == "auto_responder.list_id" for d in error["details"])

        segment_id = answer.json()["id"]
        await _member(api, redis_client, segment_id, "c-1", "one@example.com")
        url = f"/providers/profiles/{profile['id']}/reconcile"
        dry = await api.client.post(url, json={"segment_id": segment_id, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json()["added"] == ["one@example.com"]
        assert fake.state.segment_emails(list_id, tags["VIP"]) == set()
        real = await api.client.post(url, json={"segment_id": segment_id})
        assert real.status_code == 200, real.text
        assert fake.state.segment_emails(list_id, tags["VIP"]) == {"one@example.com"}
