"""``change_emails`` through each real client against its fake.

Mailchimp and ActiveCampaign rename the member in place (status, segments and tags
kept); Sendlane cannot, so the new address is upserted and the old one taken off
the list and out of the tag. Nobody is ever unsubscribed or re-subscribed.
"""

from __future__ import annotations

import pytest

from providers.base import EmailChange, Member
from providers.errors import ListNotFound
from tests.providers.harness import Harness

OLD, NEW = "old@shop.test", "new@shop.test"


def change(old: str = OLD, new: str = NEW) -> EmailChange:
    return EmailChange(old, Member(new, first_name="Renamed"))


def renames(harness: Harness) -> bool:
    return harness.provider != "sendlane"


async def test_a_member_moves_to_the_new_email(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, OLD, segment=vip)
    async with harness.client() as client:
        result = await client.change_emails(list_id, [change()], vip)
    await harness.settle()
    assert result.succeeded == [NEW] and result.ok
    assert harness.on_list(list_id, NEW) and harness.in_segment(list_id, vip, NEW)
    assert harness.subscribed(list_id, NEW) and harness.first_name(list_id, NEW) == "Renamed"
    assert not harness.on_list(list_id, OLD) and not harness.in_segment(list_id, vip, OLD)
    if not renames(harness):  # the old contact is still there, off the list, subscribed
        assert harness.subscribed(list_id, OLD)
    assert harness.resubscribes() == 0


async def test_someone_who_unsubscribed_stays_unsubscribed(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, OLD, subscribed=False, segment=vip)
    async with harness.client() as client:
        result = await client.change_emails(list_id, [change()], vip)
    await harness.settle()
    assert result.succeeded == [NEW]
    assert harness.on_list(list_id, NEW) and harness.in_segment(list_id, vip, NEW)
    assert not harness.subscribed(list_id, NEW)
    assert harness.resubscribes() == 0


async def test_an_old_email_the_provider_lacks_is_an_upsert(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    async with harness.client() as client:
        result = await client.change_emails(list_id, [change()], vip)
    await harness.settle()
    assert result.succeeded == [NEW]
    assert harness.on_list(list_id, NEW) and harness.subscribed(list_id, NEW)
    assert harness.in_segment(list_id, vip, NEW)


async def test_a_new_email_already_held_keeps_its_status(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, OLD, segment=vip)
    harness.seed_member(list_id, NEW, subscribed=False)
    async with harness.client() as client:
        result = await client.change_emails(list_id, [change()], vip)
    await harness.settle()
    assert result.succeeded == [NEW]
    assert harness.in_segment(list_id, vip, NEW) and not harness.subscribed(list_id, NEW)
    assert not harness.in_segment(list_id, vip, OLD)
    assert harness.subscribed(list_id, OLD)  # taken away, never unsubscribed
    # ActiveCampaign cannot take anyone off a list without unsubscribing them
    assert harness.on_list(list_id, OLD) is (harness.provider == "activecampaign")
    assert harness.resubscribes() == 0


async def test_an_invalid_new_email_fails_and_leaves_the_old_alone(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, OLD, segment=vip)
    harness.seed_invalid("fake@looks-fake.test")
    async with harness.client() as client:
        result = await client.change_emails(
            list_id, [change(new="fake@looks-fake.test"), change("a@shop.test", "b@shop.test")],
            vip)
    await harness.settle()
    assert result.succeeded == ["b@shop.test"]
    failure = result.failed["fake@looks-fake.test"]
    assert not failure.retriable and failure.reason
    assert harness.on_list(list_id, OLD) and harness.in_segment(list_id, vip, OLD)
    assert not harness.on_list(list_id, "fake@looks-fake.test")


async def test_changes_are_repeatable(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, OLD, segment=vip)
    async with harness.client() as client:
        for _ in range(2):
            assert (await client.change_emails(list_id, [change()], vip)).succeeded == [NEW]
            await harness.settle()
    assert harness.on_list(list_id, NEW) and harness.in_segment(list_id, vip, NEW)
    assert harness.subscribed(list_id, NEW)
    assert not harness.in_segment(list_id, vip, OLD)


async def test_without_segment_the_member_moves_on_the_list(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Customers")
    harness.seed_member(list_id, OLD)
    async with harness.client() as client:
        assert (await client.change_emails(list_id, [change()])).succeeded == [NEW]
    await harness.settle()
    assert harness.on_list(list_id, NEW) and harness.subscribed(list_id, NEW)
    assert not harness.on_list(list_id, OLD)


async def test_missing_list_fails_the_whole_call(harness: Harness) -> None:
    async with harness.client() as client:
        with pytest.raises(ListNotFound):
            await client.change_emails("987654", [change()])


async def test_no_changes_make_no_calls(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    async with harness.client() as client:
        assert (await client.change_emails(list_id, [], segments["VIP"])).succeeded == []
    assert harness.fake.stats["requests"] == 0
