"""Sendlane specifics: asynchronous writes, consent, HTML 401, ``list_name``, the batch
maximum, unsubscribes read incrementally, email changes without a rename."""

from __future__ import annotations

import httpx
import pytest

from providers.base import EmailChange, Member
from providers.errors import AuthError
from providers.sendlane import SendlaneClient
from tests.providers.harness import Harness


async def test_writes_apply_after_the_202(sendlane: Harness) -> None:
    sendlane.fake.state.write_delay = 0.2
    list_id, _ = sendlane.seed_list("Customers")
    async with sendlane.client() as client:
        assert (await client.upsert_members(list_id, [Member("late@shop.test")])).ok
    sendlane.fake.state.apply_due()
    assert sendlane.fake.state.by_email("late@shop.test") is None  # accepted, not yet there
    await sendlane.settle()
    assert sendlane.on_list(list_id, "late@shop.test")


async def test_tag_right_after_upsert_waits_for_the_contact(sendlane: Harness) -> None:
    sendlane.fake.state.write_delay = 0.15
    list_id, tags = sendlane.seed_list("Customers", "VIP")
    async with sendlane.client() as client:
        assert (await client.upsert_members(list_id, [Member("quick@shop.test")])).ok
        assert (await client.add_to_segment(list_id, tags["VIP"], ["quick@shop.test"])).ok
    await sendlane.settle()
    assert sendlane.in_segment(list_id, tags["VIP"], "quick@shop.test")


async def test_add_then_remove_in_quick_succession_ends_removed(sendlane: Harness) -> None:
    sendlane.fake.state.write_delay = 0.1
    list_id, tags = sendlane.seed_list("Customers", "VIP")
    async with sendlane.client() as client:
        assert (await client.upsert_members(list_id, [Member("flip@shop.test")])).ok
        assert (await client.add_to_segment(list_id, tags["VIP"], ["flip@shop.test"])).ok
        assert (await client.remove_from_segment(list_id, tags["VIP"], ["flip@shop.test"])).ok
        assert (await client.remove_from_list(list_id, ["flip@shop.test"])).ok
    await sendlane.settle()
    assert not sendlane.in_segment(list_id, tags["VIP"], "flip@shop.test")
    assert not sendlane.on_list(list_id, "flip@shop.test")
    assert sendlane.subscribed(list_id, "flip@shop.test")


async def test_consent_is_sent_back_unchanged_for_known_contacts(sendlane: Harness) -> None:
    list_id, _ = sendlane.seed_list("Customers")
    other, _ = sendlane.seed_list("Other")
    sendlane.fake.state.add_contact("unsub@shop.test", subscribed=False, lists=[int(other)])
    async with sendlane.client() as client:
        assert (await client.upsert_members(list_id, [Member("unsub@shop.test")])).ok
    await sendlane.settle()
    assert sendlane.on_list(list_id, "unsub@shop.test")
    assert not sendlane.subscribed(list_id, "unsub@shop.test")
    assert sendlane.fake.state.resubscribes == []


async def test_html_401_is_an_auth_error(sendlane: Harness) -> None:
    async with sendlane.client(credentials={"api_token": "nope"}) as client:
        with pytest.raises(AuthError) as caught:
            await client.fetch_lists()
    assert caught.value.status == 401 and "Unauthorized" in caught.value.detail


async def test_lists_named_list_name_are_read(sendlane: Harness) -> None:
    sendlane.fake.state.list_name_key = "list_name"
    list_id, _ = sendlane.seed_list("Old Shape")
    async with sendlane.client() as client:
        lists = await client.fetch_lists()
    assert [(lst.id, lst.name) for lst in lists] == [(list_id, "Old Shape")]


async def test_ensure_tag_finds_or_creates(sendlane: Harness) -> None:
    sendlane.seed_list("Customers", "VIP")
    async with sendlane.client() as client:
        assert isinstance(client, SendlaneClient)
        assert (await client.ensure_tag("vip")).name == "VIP"
        made = await client.ensure_tag("Winback")
    assert made.name == "Winback" and made.id in {str(i) for i in sendlane.fake.state.tags}


async def test_the_fake_refuses_more_than_100_contacts_a_call(sendlane: Harness) -> None:
    list_id, _ = sendlane.seed_list("Customers")
    token = sendlane.fake.credentials()["api_token"]
    contacts = [{"email": f"c{i}@shop.test"} for i in range(101)]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.post(f"{sendlane.base_url}/lists/{list_id}/contacts",
                                 json={"contacts": contacts})
    assert answer.status_code == 422 and "100" in answer.json()["errors"]["contacts"][0]


async def test_unsubscribes_are_read_in_full_once_then_since_the_last_read(
    sendlane: Harness,
) -> None:
    state = sendlane.fake.state
    list_id, _ = sendlane.seed_list("Customers")
    state.add_contact("early@shop.test", subscribed=False)
    async with sendlane.client() as client:
        assert isinstance(client, SendlaneClient)
        assert client.unsubscribed.since() is None  # nothing read yet: a full read
        assert (await client.upsert_members(list_id, [Member("a@shop.test")])).ok
        assert client.unsubscribed.emails == {"early@shop.test"}
        assert str(client.unsubscribed.since()).endswith("Z")  # from then on, `from`
        state.add_contact("later@shop.test", subscribed=False)
        members = [Member("early@shop.test"), Member("later@shop.test"), Member("b@shop.test")]
        assert (await client.upsert_members(list_id, members)).ok
    await sendlane.settle()
    reads = [p for m, p in sendlane.fake.calls if p == "/v2/contacts/unsubscribed"]
    assert len(reads) == 2 and state.resubscribes == []
    assert not sendlane.subscribed(list_id, "later@shop.test")
    assert sendlane.subscribed(list_id, "b@shop.test")


async def test_email_change_replaces_the_contact_without_unsubscribing(sendlane: Harness) -> None:
    state = sendlane.fake.state
    list_id, tags = sendlane.seed_list("Customers", "VIP")
    other_list, _ = sendlane.seed_list("Other")
    old = state.add_contact("old@shop.test", lists=[int(list_id), int(other_list)],
                            tags=[int(tags["VIP"])])
    async with sendlane.client() as client:
        result = await client.change_emails(
            list_id, [EmailChange("old@shop.test", Member("new@shop.test"))], tags["VIP"])
    await sendlane.settle()
    assert result.succeeded == ["new@shop.test"]
    new = state.by_email("new@shop.test")
    assert new is not None and new.subscribed and new.lists == {int(list_id)}
    assert old.subscribed and old.lists == {int(other_list)} and not old.tags
