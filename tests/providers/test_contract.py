"""The ProviderClient contract, run through each real client against its fake over HTTP.

Every test here runs three times (Mailchimp, ActiveCampaign, Sendlane): the same
promises hold for all, whatever each provider makes awkward.
"""

from __future__ import annotations

import pytest

from providers.base import Member, ProviderList
from providers.errors import AuthError, ListNotFound, PermanentError
from tests.providers.harness import Harness

BAD_CREDENTIALS = {
    "mailchimp": {"api_key": "0123456789abcdef0123456789abcdef-us6"},
    "activecampaign": {"api_url": "https://fake.api-us1.com", "api_key": "wrong"},
    "sendlane": {"api_token": "wrong"},
}


def members(*emails: str) -> list[Member]:
    return [Member(e, first_name=e.split("@")[0].title(), last_name="Test") for e in emails]


async def test_valid_credentials_pass(harness: Harness) -> None:
    async with harness.client() as client:
        await client.validate_credentials()


async def test_bad_credentials_raise_auth_error_without_retrying(harness: Harness) -> None:
    async with harness.client(credentials=BAD_CREDENTIALS[harness.provider]) as client:
        with pytest.raises(AuthError) as caught:
            await client.validate_credentials()
    assert not caught.value.retriable
    assert harness.fake.stats["auth_failures"] == 1


async def test_fetch_lists_reads_every_page_with_segments(harness: Harness) -> None:
    seeded = {harness.seed_list(f"List {i}", "VIP", "Lapsed")[0]: f"List {i}" for i in range(7)}
    async with harness.client(page_size=3) as client:
        lists = await client.fetch_lists()
    assert {lst.id: lst.name for lst in lists} == seeded
    for lst in lists:
        assert isinstance(lst, ProviderList)
        assert {s.name for s in lst.segments} >= {"VIP", "Lapsed"}
        assert all(isinstance(s.id, str) and s.id.isdigit() for s in lst.segments)
        assert lst.to_dict()["segments"][0].keys() == {"id", "name", "type"}
    list_pages = [c for c in harness.fake.calls if c[1].endswith("/lists")]
    assert len(list_pages) >= 3


async def test_upsert_adds_new_members_subscribed(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    emails = [f"new{i}@shop.test" for i in range(5)]
    async with harness.client() as client:
        result = await client.upsert_members(list_id, members(*emails))
    await harness.settle()
    assert result.ok and result.succeeded == emails
    for email in emails:
        assert harness.on_list(list_id, email)
        assert harness.subscribed(list_id, email)
        assert harness.first_name(list_id, email) == email.split("@")[0].title()


async def test_upsert_twice_changes_nothing_more(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    batch = members("a@shop.test", "b@shop.test", "A@SHOP.TEST")
    async with harness.client() as client:
        first = await client.upsert_members(list_id, batch)
        await harness.settle()
        second = await client.upsert_members(list_id, batch)
    await harness.settle()
    assert first.succeeded == second.succeeded == ["a@shop.test", "b@shop.test"]
    assert harness.on_list(list_id, "a@shop.test") and harness.subscribed(list_id, "b@shop.test")


async def test_upsert_never_resubscribes_an_unsubscribed_member(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    harness.seed_member(list_id, "gone@shop.test", subscribed=False)
    harness.seed_member(list_id, "kept@shop.test", subscribed=True)
    async with harness.client() as client:
        result = await client.upsert_members(
            list_id, members("gone@shop.test", "kept@shop.test", "fresh@shop.test")
        )
    await harness.settle()
    assert result.ok
    assert not harness.subscribed(list_id, "gone@shop.test")
    assert harness.subscribed(list_id, "kept@shop.test")
    assert harness.subscribed(list_id, "fresh@shop.test")
    assert harness.resubscribes() == 0


async def test_segment_add_and_remove_are_repeatable(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    emails = ["x@shop.test", "y@shop.test", "z@shop.test"]
    async with harness.client() as client:
        assert (await client.upsert_members(list_id, members(*emails))).ok
        for _ in range(2):
            added = await client.add_to_segment(list_id, vip, emails)
            assert added.succeeded == emails
        for _ in range(2):
            removed = await client.remove_from_segment(list_id, vip, ["y@shop.test"])
            assert removed.ok
    await harness.settle()
    assert [harness.in_segment(list_id, vip, e) for e in emails] == [True, False, True]
    assert all(harness.subscribed(list_id, e) for e in emails)  # leaving unsubscribes nobody


async def test_removing_from_segment_someone_never_there_is_done(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    async with harness.client() as client:
        result = await client.remove_from_segment(list_id, segments["VIP"], ["nobody@shop.test"])
    assert result.succeeded == ["nobody@shop.test"]


async def test_remove_from_list_never_unsubscribes(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    emails = ["stay@shop.test", "leave@shop.test"]
    async with harness.client() as client:
        await client.upsert_members(list_id, members(*emails))
        await harness.settle()
        first = await client.remove_from_list(list_id, ["leave@shop.test"])
        await harness.settle()
        again = await client.remove_from_list(list_id, ["leave@shop.test"])
    await harness.settle()
    assert harness.subscribed(list_id, "leave@shop.test")  # off the list, not unsubscribed
    assert harness.on_list(list_id, "stay@shop.test")
    if client.supports_list_removal:
        assert first.ok and again.ok
        assert not harness.on_list(list_id, "leave@shop.test")
    else:  # ActiveCampaign: only an unsubscribe would do it, so it refuses per member
        assert first.permanent.keys() == {"leave@shop.test"}
        assert "unsubscrib" in first.failed["leave@shop.test"].reason
        assert harness.on_list(list_id, "leave@shop.test")


async def test_invalid_email_fails_alone_with_the_providers_reason(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    harness.seed_invalid("fake@looks-fake.test")
    async with harness.client() as client:
        result = await client.upsert_members(
            list_id, members("ok1@shop.test", "fake@looks-fake.test", "ok2@shop.test")
        )
    await harness.settle()
    assert result.succeeded == ["ok1@shop.test", "ok2@shop.test"]
    failure = result.failed["fake@looks-fake.test"]
    assert not failure.retriable and failure.reason
    assert result.permanent == result.failed
    assert harness.retries == []  # permanent: never retried
    assert harness.on_list(list_id, "ok2@shop.test")
    assert not harness.on_list(list_id, "fake@looks-fake.test")


async def test_missing_list_fails_the_whole_call(harness: Harness) -> None:
    async with harness.client() as client:
        with pytest.raises(ListNotFound) as caught:
            await client.upsert_members("987654", members("a@shop.test"))
    assert isinstance(caught.value, PermanentError) and caught.value.status == 404
    assert harness.retries == []


async def test_empty_batches_make_no_calls(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    async with harness.client() as client:
        results = [
            await client.upsert_members(list_id, []),
            await client.add_to_segment(list_id, segments["VIP"], []),
            await client.remove_from_segment(list_id, segments["VIP"], []),
            await client.remove_from_list(list_id, []),
        ]
    assert all(r.ok and not r.succeeded for r in results)
    assert harness.fake.stats["requests"] == 0
