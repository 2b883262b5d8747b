"""``upsert_members`` with a segment or tag, run through each real client against its fake.

Five members take ActiveCampaign's ordinary calls, sixty its bulk import; the other
providers batch both sizes alike. A member succeeds only once it is on the list and
in the segment or tag.
"""

from __future__ import annotations

import pytest

from providers.base import BatchResult, Member, MemberFailure
from tests.providers.harness import Harness

SIZES = [5, 60]


def members(*emails: str) -> list[Member]:
    return [Member(e, first_name="M") for e in emails]


@pytest.mark.parametrize("count", SIZES)
async def test_members_join_list_and_segment_repeatably(harness: Harness, count: int) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    emails = [f"m{i}@shop.test" for i in range(count)]
    async with harness.client() as client:
        first = await client.upsert_members(list_id, members(*emails), vip)
        await harness.settle()
        again = await client.upsert_members(list_id, members(*emails), vip)
    await harness.settle()
    assert first.succeeded == again.succeeded == emails and first.ok and again.ok
    for email in emails:
        assert harness.on_list(list_id, email) and harness.subscribed(list_id, email)
        assert harness.in_segment(list_id, vip, email)
        assert harness.first_name(list_id, email) == "M"


@pytest.mark.parametrize("count", SIZES)
async def test_refused_members_fail_alone_with_the_providers_reason(
    harness: Harness, count: int
) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    vip = segments["VIP"]
    harness.seed_member(list_id, "gone@shop.test", subscribed=False)
    harness.seed_invalid("fake@looks-fake.test")
    ok = [f"ok{i}@shop.test" for i in range(count - 2)]
    async with harness.client() as client:
        result = await client.upsert_members(
            list_id, members(*ok[:1], "fake@looks-fake.test", "gone@shop.test", *ok[1:]), vip
        )
    await harness.settle()
    assert result.succeeded == [*ok[:1], "gone@shop.test", *ok[1:]]
    assert result.failed.keys() == {"fake@looks-fake.test"}
    failure = result.failed["fake@looks-fake.test"]
    assert not failure.retriable and failure.reason and failure.status in (400, 422)
    assert not harness.on_list(list_id, "fake@looks-fake.test")
    assert not harness.in_segment(list_id, vip, "fake@looks-fake.test")
    # someone who unsubscribed is in the segment, and still unsubscribed
    assert harness.in_segment(list_id, vip, "gone@shop.test")
    assert not harness.subscribed(list_id, "gone@shop.test")
    assert harness.resubscribes() == 0
    assert all(harness.in_segment(list_id, vip, e) for e in ok)


async def test_without_segment_nothing_is_tagged(harness: Harness) -> None:
    list_id, segments = harness.seed_list("Customers", "VIP")
    async with harness.client() as client:
        assert (await client.upsert_members(list_id, members("a@shop.test"))).ok
    await harness.settle()
    assert harness.on_list(list_id, "a@shop.test")
    assert not harness.in_segment(list_id, segments["VIP"], "a@shop.test")


def test_a_member_succeeds_only_when_both_steps_did() -> None:
    refused = MemberFailure("Invalid Resource", status=400)
    not_tagged = MemberFailure("Too Many Requests", status=429, retriable=True)
    upserted = BatchResult(["a@x.test", "b@x.test"], {"c@x.test": refused})
    tagged = BatchResult(["a@x.test"], {"b@x.test": not_tagged})
    both = upserted.then(tagged)
    assert both.succeeded == ["a@x.test"]
    assert both.failed == {"b@x.test": not_tagged, "c@x.test": refused}
    assert both.retriable.keys() == {"b@x.test"} and both.permanent.keys() == {"c@x.test"}
