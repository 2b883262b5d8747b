"""ActiveCampaign specifics: look before subscribing, tags removed by association id;
the fake's bulk import and email changes."""

from __future__ import annotations

import httpx

from providers.activecampaign import ActiveCampaignClient
from providers.base import Member
from tests.providers.harness import Harness


def _posts(harness: Harness, path: str) -> int:
    return harness.fake.calls.count(("POST", f"/api/3{path}"))


async def test_sticky_statuses_are_never_posted_over(activecampaign: Harness) -> None:
    state = activecampaign.fake.state
    list_id, _ = activecampaign.seed_list("Customers")
    lid = int(list_id)
    state.add_contact("unsub@shop.test", lists={lid: 2})
    state.add_contact("bounced@shop.test", lists={lid: 3})
    state.add_contact("elsewhere@shop.test", lists={})
    async with activecampaign.client() as client:
        result = await client.upsert_members(list_id, [
            Member("unsub@shop.test", "U"), Member("bounced@shop.test"),
            Member("elsewhere@shop.test"), Member("new@shop.test"),
        ])
    assert result.ok
    assert state.list_status("unsub@shop.test", lid) == 2
    assert state.list_status("bounced@shop.test", lid) == 3
    assert state.list_status("elsewhere@shop.test", lid) == 1
    assert state.list_status("new@shop.test", lid) == 1
    assert _posts(activecampaign, "/contactLists") == 2  # only the two not on the list
    assert state.by_email("unsub@shop.test").first_name == "U"  # type: ignore[union-attr]
    assert state.resubscribes == [] and state.unsubscribes == []


async def test_the_fake_resubscribes_when_asked(activecampaign: Harness) -> None:
    """Why the client must look first: status 1 over status 2 re-subscribes."""
    list_id, _ = activecampaign.seed_list("Customers")
    contact = activecampaign.fake.state.add_contact("unsub@shop.test", lists={int(list_id): 2})
    headers = {"Api-Token": activecampaign.fake.credentials()["api_key"]}
    async with httpx.AsyncClient(headers=headers) as http:
        answer = await http.post(f"{activecampaign.base_url}/contactLists", json={
            "contactList": {"list": list_id, "contact": contact.id, "status": 1}})
    assert answer.status_code == 201
    assert activecampaign.fake.state.resubscribes == [("unsub@shop.test", int(list_id))]


async def test_tag_removal_deletes_every_association(activecampaign: Harness) -> None:
    state = activecampaign.fake.state
    _, tags = activecampaign.seed_list("Customers", "VIP", "Other")
    vip, other = int(tags["VIP"]), int(tags["Other"])
    contact = state.add_contact("t@shop.test", tags=[vip, other])
    state.link_tag(contact.id, vip)  # a duplicate association, as a retried POST leaves
    async with activecampaign.client() as client:
        result = await client.remove_from_segment("1", tags["VIP"], ["t@shop.test"])
    assert result.ok
    assert state.tag_ids("t@shop.test") == {other}
    deletes = [p for m, p in activecampaign.fake.calls if m == "DELETE"]
    assert len(deletes) == 2 and all(p.startswith("/api/3/contactTags/") for p in deletes)


async def test_tagging_twice_makes_one_association(activecampaign: Harness) -> None:
    list_id, tags = activecampaign.seed_list("Customers", "VIP")
    async with activecampaign.client() as client:
        await client.upsert_members(list_id, [Member("t@shop.test")])
        for _ in range(3):
            assert (await client.add_to_segment(list_id, tags["VIP"], ["t@shop.test"])).ok
    assert len(activecampaign.fake.state.contact_tags) == 1
    assert _posts(activecampaign, "/contactTags") == 1


async def test_tagging_an_unknown_contact_fails_that_member(activecampaign: Harness) -> None:
    list_id, tags = activecampaign.seed_list("Customers", "VIP")
    async with activecampaign.client() as client:
        result = await client.add_to_segment(list_id, tags["VIP"], ["ghost@shop.test"])
    assert result.failed["ghost@shop.test"].title == "Contact Not Found"


async def test_ensure_tag_finds_or_creates(activecampaign: Harness) -> None:
    activecampaign.seed_list("Customers", "Lapsed VIPs")
    async with activecampaign.client() as client:
        assert isinstance(client, ActiveCampaignClient)
        found = await client.ensure_tag("lapsed vips")
        made = await client.ensure_tag("New Tag")
        again = await client.ensure_tag("New Tag")
    assert found.name == "Lapsed VIPs" and made == again
    assert _posts(activecampaign, "/tags") == 1


async def test_field_values_are_sent(activecampaign: Harness) -> None:
    list_id, _ = activecampaign.seed_list("Customers")
    member = Member("f@shop.test", "F", "L", "+15550100", merge_fields={"7": "gold"})
    async with activecampaign.client() as client:
        assert (await client.upsert_members(list_id, [member])).ok
    contact = activecampaign.fake.state.by_email("f@shop.test")
    assert contact is not None
    assert (contact.last_name, contact.phone, contact.field_values) == (
        "L", "+15550100", {"7": "gold"})


def _headers(harness: Harness) -> dict[str, str]:
    return {"Api-Token": harness.fake.credentials()["api_key"]}


async def test_the_fake_import_refuses_more_than_250(activecampaign: Harness) -> None:
    contacts = [{"email": f"c{i}@shop.test"} for i in range(251)]
    async with httpx.AsyncClient(headers=_headers(activecampaign)) as http:
        answer = await http.post(f"{activecampaign.base_url}/import/bulk_import",
                                 json={"contacts": contacts})
    assert answer.status_code == 400 and answer.json()["success"] == 0
    assert activecampaign.fake.state.imports.batches == {}


async def test_the_fake_import_has_its_own_limits(activecampaign: Harness) -> None:
    activecampaign.fake.bulk_rate_limit = (2, 3, 60.0)
    url = f"{activecampaign.base_url}/import/bulk_import"
    one = {"contacts": [{"email": "one@shop.test"}]}
    two = {"contacts": [{"email": "a@shop.test"}, {"email": "b@shop.test"}]}
    async with httpx.AsyncClient(headers=_headers(activecampaign)) as http:
        singles = [(await http.post(url, json=one)).status_code for _ in range(3)]
        several = [await http.post(url, json=two) for _ in range(4)]
    assert singles == [200, 200, 429]
    assert [a.status_code for a in several] == [200, 200, 200, 429]
    assert float(several[-1].headers["Retry-After"]) > 0
    assert several[-1].headers["RateLimit-Limit"] == "3"


async def test_the_fake_refuses_an_email_another_contact_has(activecampaign: Harness) -> None:
    state = activecampaign.fake.state
    mine = state.add_contact("mine@shop.test")
    state.add_contact("taken@shop.test")
    async with httpx.AsyncClient(headers=_headers(activecampaign)) as http:
        answer = await http.put(f"{activecampaign.base_url}/contacts/{mine.id}",
                                json={"contact": {"email": "TAKEN@shop.test"}})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["code"] == "duplicate"
    assert mine.email == "mine@shop.test"
