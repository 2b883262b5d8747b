"""ActiveCampaign specifics: look before subscribing, tags removed by association id,
the bulk import's limits, email changes that keep the contact."""

from __future__ import annotations

import asyncio
import time

import httpx

from providers.activecampaign import ActiveCampaignClient
from providers.base import EmailChange, Member
from providers.limits import AC_BULK_IMPORT, LimitPolicy, ProviderLimits
from tests.providers.harness import FAST_POLICIES, Harness


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


async def test_imports_are_paced_without_holding_up_ordinary_calls(
    activecampaign: Harness,
) -> None:
    activecampaign.fake.bulk_rate_limit = (20, 1, 0.6)
    limits = ProviderLimits({**FAST_POLICIES,
                             AC_BULK_IMPORT: LimitPolicy(max_calls=1, period=0.6, margin=0.1)})
    list_id, _ = activecampaign.seed_list("Paced")
    members = [Member(f"p{i}@shop.test") for i in range(600)]  # three imports of 200
    async with activecampaign.client(limits=limits) as client:
        started = time.monotonic()
        bulk = asyncio.create_task(client.upsert_members(list_id, members))
        await asyncio.sleep(0.1)  # the first import is in; the others wait for the window
        await client.validate_credentials()
        ordinary_took = time.monotonic() - started
        result = await bulk
    assert result.ok and len(result.succeeded) == 600
    assert time.monotonic() - started >= 1.2  # 3 imports, one per 0.6 s window
    assert ordinary_took < 0.5
    assert activecampaign.fake.stats["rate_limited"] == 0


async def test_an_import_429_pauses_imports_only(activecampaign: Harness) -> None:
    activecampaign.fake.bulk_rate_limit = (20, 1, 0.5)
    limits = ProviderLimits({**FAST_POLICIES, AC_BULK_IMPORT: LimitPolicy()})  # unpaced
    list_id, _ = activecampaign.seed_list("Unpaced")
    members = [Member(f"u{i}@shop.test") for i in range(500)]  # two imports of 250
    async with activecampaign.client(limits=limits) as client:
        bulk = asyncio.create_task(client.upsert_members(list_id, members))
        await asyncio.sleep(0.15)
        started = time.monotonic()
        await client.validate_credentials()
        ordinary_took = time.monotonic() - started
        result = await bulk
    assert result.ok and activecampaign.fake.stats["rate_limited"] >= 1
    assert ordinary_took < 0.3


async def test_email_change_keeps_the_contact_and_its_tags(activecampaign: Harness) -> None:
    state = activecampaign.fake.state
    list_id, tags = activecampaign.seed_list("Customers", "VIP", "Other")
    vip, other = int(tags["VIP"]), int(tags["Other"])
    contact = state.add_contact("old@shop.test", lists={int(list_id): 1}, tags=[vip, other])
    async with activecampaign.client() as client:
        result = await client.change_emails(
            list_id, [EmailChange("old@shop.test", Member("new@shop.test"))], tags["VIP"])
    assert result.succeeded == ["new@shop.test"]
    assert state.by_email("new@shop.test") is contact and state.by_email("old@shop.test") is None
    assert state.tag_ids("new@shop.test") == {vip, other} and len(state.contact_tags) == 2
    assert activecampaign.fake.calls.count(("PUT", f"/api/3/contacts/{contact.id}")) == 1


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
