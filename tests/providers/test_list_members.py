"""``list_members``: every page of a list or of a segment or tag, against each fake."""

from __future__ import annotations

import pytest

from providers.errors import AuthError, ListNotFound
from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.mailchimp import MailchimpFake
from tests.providers.harness import Harness


async def test_list_members_reads_every_page_of_list_and_segment(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Shop", "VIP")
    other_id, _ = harness.seed_list("Other")
    vip = segments["VIP"]
    on_list = [f"Person{n}@Shop.test" for n in range(7)]
    for email in on_list:
        harness.seed_member(list_id, email)
    harness.seed_member(list_id, "gone@shop.test", subscribed=False)  # unsubscribed: still on
    harness.seed_member(other_id, "elsewhere@shop.test")
    if isinstance(harness.fake, MailchimpFake):
        harness.seed_member(list_id, "archived@shop.test")
        member = harness.fake.state.member(list_id, "archived@shop.test")
        assert member is not None
        member.archived = True
    async with harness.client(page_size=2) as client:
        tagged = await client.add_to_segment(list_id, vip, on_list[:5])
        assert tagged.ok
        await harness.settle()
        harness.fake.calls.clear()
        everyone = await client.list_members(list_id, None)
        in_vip = await client.list_members(list_id, vip)
    assert everyone == {e.lower() for e in on_list} | {"gone@shop.test"}
    assert in_vip == {e.lower() for e in on_list[:5]}
    reads = [path for method, path in harness.fake.calls if method == "GET"
             and path.endswith(("/members", "/contacts"))]
    assert len(reads) >= 4 + 3  # 8 on the list and 5 in the tag, two a page


async def test_list_members_of_a_missing_list_raises(harness: Harness) -> None:
    async with harness.client() as client:
        with pytest.raises(ListNotFound):
            await client.list_members("999999", None)


async def test_list_members_honours_auth(harness: Harness) -> None:
    list_id, _ = harness.seed_list("Shop")
    bad = {k: (v if k == "api_url" else "0" * 32 + "-us6") for k, v in
           harness.fake.credentials().items()}
    async with harness.client(credentials=bad) as client:
        with pytest.raises(AuthError):
            await client.list_members(list_id, None)
    assert harness.fake.stats["auth_failures"] >= 1


async def test_activecampaign_list_members_counts_any_list_status(
    activecampaign: Harness,
) -> None:
    fake = activecampaign.fake
    assert isinstance(fake, ActiveCampaignFake)
    list_id, _ = activecampaign.seed_list("Shop")
    fake.state.add_contact("bounced@shop.test", lists={int(list_id): 3})
    fake.state.add_contact("nowhere@shop.test")
    async with activecampaign.client(page_size=1) as client:
        assert await client.list_members(list_id, None) == {"bounced@shop.test"}
