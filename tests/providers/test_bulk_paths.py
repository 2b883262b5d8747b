"""Each provider's bulk path at store scale, with some members refused and the rest done.

Mailchimp: 500-member batch upserts then 500-member segment calls. ActiveCampaign:
bulk imports of up to 250 (balanced), the members an import reports done again by
ordinary calls. Sendlane: one ``POST /lists/{id}/contacts`` per 100 with ``tag_ids``.
"""

from __future__ import annotations

from providers.ac_import import ImportWait
from providers.base import Member
from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.sendlane import SendlaneFake
from tests.providers.harness import Harness


def _posts(harness: Harness, path: str) -> int:
    return harness.fake.calls.count(("POST", path))


async def test_mailchimp_batches_of_500_with_refusals(mailchimp: Harness) -> None:
    fake: MailchimpFake = mailchimp.fake
    list_id, segments = mailchimp.seed_list("Big", "VIP")
    vip = segments["VIP"]
    fake.state.add_member(list_id, "unsub@shop.test", "unsubscribed")
    fake.state.compliance_emails.add("bounced@shop.test")
    fake.state.forgotten_emails.add("forgotten@shop.test")
    fake.state.invalid_emails.add("asdf@fake.test")
    refused = ["bounced@shop.test", "forgotten@shop.test", "asdf@fake.test"]
    emails = [f"bulk{i}@shop.test" for i in range(1197)] + ["unsub@shop.test", *refused]
    async with mailchimp.client() as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails], vip)
    assert result.succeeded == emails[:1198]
    assert {e: f.title for e, f in result.failed.items()} == {
        "bounced@shop.test": "Member In Compliance State",
        "forgotten@shop.test": "Forgotten Email Not Subscribed",
        "asdf@fake.test": "Invalid Resource",
    }
    assert all(not f.retriable and f.status == 400 for f in result.failed.values())
    assert _posts(mailchimp, f"/3.0/lists/{list_id}") == 3
    assert _posts(mailchimp, f"/3.0/lists/{list_id}/segments/{vip}") == 3
    assert fake.state.segment_emails(list_id, vip) == set(emails[:1198])
    assert fake.state.member(list_id, "unsub@shop.test").status == "unsubscribed"  # type: ignore[union-attr]
    assert fake.peak_in_flight <= 10 and fake.state.resubscribes() == []


async def test_activecampaign_imports_with_refusals(activecampaign: Harness) -> None:
    fake: ActiveCampaignFake = activecampaign.fake
    state = fake.state
    list_id, tags = activecampaign.seed_list("Big", "VIP")
    lid, vip = int(list_id), tags["VIP"]
    state.add_contact("unsub@shop.test", lists={lid: 2})
    state.add_contact("bounced@shop.test", lists={lid: 3})
    state.add_contact("member@shop.test", lists={lid: 1})
    state.invalid_emails.update({"asdf@fake.test", "qwer@fake.test"})
    kept = ["unsub@shop.test", "bounced@shop.test", "member@shop.test"]
    emails = [f"bulk{i}@shop.test" for i in range(295)] + kept + ["asdf@fake.test",
                                                                  "qwer@fake.test"]
    async with activecampaign.client() as client:
        result = await client.upsert_members(list_id, [Member(e, "B") for e in emails], vip)
    await activecampaign.settle()
    assert [b.size for b in state.imports.batches.values()] == [150, 150]
    assert result.succeeded == emails[:298]
    assert result.failed.keys() == {"asdf@fake.test", "qwer@fake.test"}
    for failure in result.failed.values():  # the ordinary call said exactly why
        assert failure.title == "Email address is invalid" and failure.status == 422
        assert not failure.retriable
    # the import refused those with a sticky status; ordinary calls did them, status kept
    assert state.imports.skipped.keys() == {"unsub@shop.test", "bounced@shop.test",
                                            "asdf@fake.test", "qwer@fake.test"}
    assert state.list_status("unsub@shop.test", lid) == 2
    assert state.list_status("bounced@shop.test", lid) == 3
    assert state.tagged_emails(int(vip)) == set(emails[:298])
    assert all(state.list_status(e, lid) == 1 for e in emails[:295])
    assert state.by_email("bulk7@shop.test").first_name == "B"  # type: ignore[union-attr]
    assert state.resubscribes == [] and state.unsubscribes == []
    assert _posts(activecampaign, "/api/3/contactLists") == 0


async def test_activecampaign_imports_never_carry_one_contact(activecampaign: Harness) -> None:
    list_id, _ = activecampaign.seed_list("Big")
    async with activecampaign.client() as client:
        for count in (21, 251, 20):
            members = [Member(f"c{count}-{i}@shop.test") for i in range(count)]
            assert (await client.upsert_members(list_id, members)).ok
    sizes = [b.size for b in activecampaign.fake.state.imports.batches.values()]
    assert sizes == [21, 126, 125]  # and 20 went through the ordinary calls


async def test_activecampaign_unfinished_import_is_retriable(activecampaign: Harness) -> None:
    activecampaign.fake.state.imports.delay = 30.0
    list_id, _ = activecampaign.seed_list("Slow")
    wait = ImportWait(first=0.01, cap=0.02, limit=0.1)
    emails = [f"s{i}@shop.test" for i in range(30)]
    async with activecampaign.client(import_wait=wait) as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails])
    assert not result.succeeded and result.retriable.keys() == set(emails)
    assert {f.title for f in result.failed.values()} == {"Import Pending"}


async def test_sendlane_posts_100_a_call_with_tags(sendlane: Harness) -> None:
    fake: SendlaneFake = sendlane.fake
    list_id, tags = sendlane.seed_list("Big", "VIP")
    vip = int(tags["VIP"])
    fake.state.add_contact("unsub@shop.test", subscribed=False)
    fake.state.invalid_emails.update({"asdf@fake.test", "qwer@fake.test"})
    emails = [f"bulk{i}@shop.test" for i in range(246)]
    emails[10:10] = ["asdf@fake.test", "unsub@shop.test"]
    emails.append("qwer@fake.test")
    async with sendlane.client() as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails], tags["VIP"])
    await sendlane.settle()
    refused = {"asdf@fake.test", "qwer@fake.test"}
    assert result.succeeded == [e for e in emails if e not in refused]
    assert result.failed.keys() == refused
    for failure in result.failed.values():
        assert failure.status == 422 and not failure.retriable
        assert "valid email" in failure.detail
    # 3 posts of at most 100, and one again for each that had a refusal in it
    assert _posts(sendlane, f"/v2/lists/{list_id}/contacts") == 5
    assert not any(path == "/v2/contacts/search" for _, path in fake.calls)
    contacts = [fake.state.by_email(e) for e in result.succeeded]
    assert all(c is not None and vip in c.tags and int(list_id) in c.lists for c in contacts)
    unsub = fake.state.by_email("unsub@shop.test")
    assert unsub is not None and not unsub.subscribed and fake.state.resubscribes == []



async def test_activecampaign_refused_import_is_done_one_by_one(activecampaign: Harness) -> None:
    activecampaign.fake.max_import_bytes = 1000  # the real limit is 400,000 bytes
    list_id, tags = activecampaign.seed_list("Big", "VIP")
    emails = [f"r{i}@shop.test" for i in range(25)]
    async with activecampaign.client() as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails], tags["VIP"])
    assert result.succeeded == emails
    assert activecampaign.fake.state.imports.batches == {}
    assert activecampaign.fake.state.tagged_emails(int(tags["VIP"])) == set(emails)
