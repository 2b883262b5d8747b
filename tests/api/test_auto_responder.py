"""Profiles behind the API's token, and segments that must name a list the provider sync saw."""

from __future__ import annotations

from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import serve_fake
from tests.api.conftest import Api

VIP = {"name": "VIP", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gt", "value": 300}]}]}


async def test_segment_auto_responder_must_name_a_synced_list_and_tag(api: Api):
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
    bad = {**VIP, "auto_responder": {"profile_id": profile["id"], "list_id": "no-such-list"}}
    refused = await api.client.post("/segments", json=bad)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "unknown_auto_responder_target"
    assert any(d["path"] == "auto_responder.list_id" for d in error["details"])
