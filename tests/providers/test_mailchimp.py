"""Mailchimp specifics: subscriber hash, 500-member batches, partial failure in a 200,
renames by PATCH."""

from __future__ import annotations

import base64

import httpx

from providers.base import EmailChange, Member
from providers.fakes import mailchimp as fake_mailchimp
from providers.fakes.mailchimp import MailchimpFake
from providers.mailchimp import MailchimpClient, subscriber_hash
from tests.providers.harness import Harness


def test_subscriber_hash_matches_mailchimps_test_vector() -> None:
    email = "Urist.McVankab@freddiesjokes.com"
    assert subscriber_hash(email) == "62eeb292278cc15f5817cb78f7790b08"
    assert fake_mailchimp.subscriber_hash(email) == subscriber_hash(email)


def _batch_posts(harness: Harness, list_id: str) -> int:
    return harness.fake.calls.count(("POST", f"/3.0/lists/{list_id}"))


async def test_large_upserts_go_in_batches_of_500(mailchimp: Harness) -> None:
    list_id, segments = mailchimp.seed_list("Big", "VIP")
    emails = [f"bulk{i}@shop.test" for i in range(1201)]
    async with mailchimp.client() as client:
        upserted = await client.upsert_members(list_id, [Member(e) for e in emails])
        tagged = await client.add_to_segment(list_id, segments["VIP"], emails[:600])
    assert upserted.ok and len(upserted.succeeded) == 1201
    assert tagged.ok
    assert _batch_posts(mailchimp, list_id) == 3
    segment_posts = ("POST", f"/3.0/lists/{list_id}/segments/{segments['VIP']}")
    assert mailchimp.fake.calls.count(segment_posts) == 2
    assert len(mailchimp.fake.state.segment_emails(list_id, segments["VIP"])) == 600


async def test_partial_failure_in_a_200_is_reported_per_member(mailchimp: Harness) -> None:
    state = mailchimp.fake.state
    list_id, _ = mailchimp.seed_list("Customers")
    state.add_member(list_id, "unsub@shop.test", "unsubscribed")
    state.compliance_emails.add("bounced@shop.test")
    state.forgotten_emails.add("forgotten@shop.test")
    state.invalid_emails.add("asdf@fake.test")
    emails = ["ok@shop.test", "bounced@shop.test", "unsub@shop.test", "forgotten@shop.test",
              "asdf@fake.test", "ok2@shop.test"]
    async with mailchimp.client() as client:
        result = await client.upsert_members(list_id, [Member(e) for e in emails])
    assert result.succeeded == ["ok@shop.test", "unsub@shop.test", "ok2@shop.test"]
    assert {e: f.title for e, f in result.failed.items()} == {
        "bounced@shop.test": "Member In Compliance State",
        "forgotten@shop.test": "Forgotten Email Not Subscribed",
        "asdf@fake.test": "Invalid Resource",
    }
    assert all(not f.retriable and f.status == 400 for f in result.failed.values())
    # one batch, then each refused member alone (no retries of permanent errors)
    assert _batch_posts(mailchimp, list_id) == 1
    assert sum(1 for method, _ in mailchimp.fake.calls if method == "PUT") == 3
    assert state.member(list_id, "unsub@shop.test").status == "unsubscribed"  # type: ignore[union-attr]


async def test_batch_errors_can_be_taken_as_they_come(mailchimp: Harness) -> None:
    list_id, _ = mailchimp.seed_list("Customers")
    mailchimp.fake.state.compliance_emails.add("bounced@shop.test")
    async with mailchimp.client(retry_failed_individually=False) as client:
        result = await client.upsert_members(
            list_id, [Member("ok@shop.test"), Member("bounced@shop.test")]
        )
    failure = result.failed["bounced@shop.test"]
    assert failure.code == "ERROR_GENERIC" and "compliance state" in failure.detail
    assert not any(method == "PUT" for method, _ in mailchimp.fake.calls)


async def test_upsert_sends_status_if_new_only(mailchimp: Harness) -> None:
    list_id, _ = mailchimp.seed_list("Customers")
    mailchimp.fake.state.add_member(list_id, "cleaned@shop.test", "cleaned")
    async with mailchimp.client(status_if_new="pending") as client:
        result = await client.upsert_members(
            list_id, [Member("cleaned@shop.test", "C"), Member("new@shop.test")]
        )
    assert result.ok
    assert mailchimp.fake.state.member(list_id, "cleaned@shop.test").status == "cleaned"  # type: ignore[union-attr]
    assert mailchimp.fake.state.member(list_id, "new@shop.test").status == "pending"  # type: ignore[union-attr]
    assert mailchimp.fake.state.status_changes == []


async def test_archived_unsubscribed_member_comes_back_unsubscribed(mailchimp: Harness) -> None:
    list_id, _ = mailchimp.seed_list("Customers")
    mailchimp.seed_member(list_id, "u@shop.test", subscribed=False)
    async with mailchimp.client() as client:
        assert (await client.remove_from_list(list_id, ["u@shop.test"])).ok
        assert mailchimp.fake.state.member(list_id, "u@shop.test").archived  # type: ignore[union-attr]
        assert (await client.upsert_members(list_id, [Member("u@shop.test")])).ok
    member = mailchimp.fake.state.member(list_id, "u@shop.test")
    assert member is not None and not member.archived and member.status == "unsubscribed"


async def test_the_fake_refuses_resubscribing_through_status(mailchimp: Harness) -> None:
    """What a careless client would meet: ``status: subscribed`` on an unsubscribed member."""
    list_id, _ = mailchimp.seed_list("Customers")
    mailchimp.seed_member(list_id, "u@shop.test", subscribed=False)
    key = mailchimp.fake.credentials()["api_key"]
    auth = "Basic " + base64.b64encode(f"x:{key}".encode()).decode()
    async with httpx.AsyncClient(headers={"Authorization": auth}) as http:
        answer = await http.put(
            f"{mailchimp.base_url}/lists/{list_id}/members/{subscriber_hash('u@shop.test')}",
            json={"email_address": "u@shop.test", "status": "subscribed"},
        )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "Member In Compliance State"


async def test_empty_body_throttling_is_retried(mailchimp: Harness) -> None:
    mailchimp.fake.throttle_style = "empty-403"
    mailchimp.fake.faults.rate_429 = 0.3
    list_id, _ = mailchimp.seed_list("Customers")
    async with mailchimp.client() as client:
        await client.validate_credentials()
        result = await client.upsert_members(list_id, [Member(f"e{i}@shop.test") for i in range(5)])
    assert result.ok
    assert mailchimp.fake.stats["rate_limited"] > 0
    assert any("throttled" in r for r in mailchimp.retries)


async def test_oauth_bearer_token(fake_servers: dict[str, tuple[object, str]]) -> None:
    slot, base_url = fake_servers["mailchimp"]
    fake = MailchimpFake(api_keys=(), access_tokens=("oauth-token-123",))
    slot.target = fake  # type: ignore[attr-defined]
    harness = Harness("mailchimp", fake, base_url)
    assert fake.credentials() == {"access_token": "oauth-token-123", "dc": "us6"}
    async with harness.client() as client:
        assert isinstance(client, MailchimpClient)
        await client.validate_credentials()


def _auth(harness: Harness) -> dict[str, str]:
    key = harness.fake.credentials()["api_key"]
    return {"Authorization": "Basic " + base64.b64encode(f"x:{key}".encode()).decode()}


async def test_email_change_is_one_patch_keeping_status_and_segments(mailchimp: Harness) -> None:
    state = mailchimp.fake.state
    list_id, segments = mailchimp.seed_list("Customers", "VIP", "Other")
    vip, other = segments["VIP"], segments["Other"]
    state.add_member(list_id, "old@shop.test", "unsubscribed")
    for segment in (vip, other):
        state.lists[list_id].segments[int(segment)].members.add(subscriber_hash("old@shop.test"))
    async with mailchimp.client() as client:
        result = await client.change_emails(
            list_id, [EmailChange("old@shop.test", Member("new@shop.test", "N"))], vip)
    assert result.succeeded == ["new@shop.test"]
    patch = ("PATCH", f"/3.0/lists/{list_id}/members/{subscriber_hash('old@shop.test')}")
    assert mailchimp.fake.calls.count(patch) == 1
    member = state.member(list_id, "new@shop.test")
    assert member is not None and member.status == "unsubscribed"
    assert member.merge_fields["FNAME"] == "N" and state.member(list_id, "old@shop.test") is None
    assert state.segment_emails(list_id, other) == {"new@shop.test"}
    assert state.status_changes == []


async def test_a_cleaned_member_is_not_renamed_but_replaced(mailchimp: Harness) -> None:
    state = mailchimp.fake.state
    list_id, segments = mailchimp.seed_list("Customers", "VIP")
    state.add_member(list_id, "bounced@shop.test", "cleaned")
    async with mailchimp.client() as client:
        result = await client.change_emails(
            list_id, [EmailChange("bounced@shop.test", Member("fixed@shop.test"))],
            segments["VIP"])
    assert result.succeeded == ["fixed@shop.test"]
    assert state.member(list_id, "fixed@shop.test").status == "subscribed"  # type: ignore[union-attr]
    old = state.member(list_id, "bounced@shop.test")
    assert old is not None and old.archived and old.status == "cleaned"
    assert state.segment_emails(list_id, segments["VIP"]) == {"fixed@shop.test"}


async def test_an_archived_member_renamed_comes_back_with_its_status(mailchimp: Harness) -> None:
    state = mailchimp.fake.state
    list_id, _ = mailchimp.seed_list("Customers")
    state.add_member(list_id, "old@shop.test", "unsubscribed").archived = True
    async with mailchimp.client() as client:
        result = await client.change_emails(
            list_id, [EmailChange("old@shop.test", Member("new@shop.test"))])
    assert result.succeeded == ["new@shop.test"]
    member = state.member(list_id, "new@shop.test")
    assert member is not None and not member.archived and member.status == "unsubscribed"


async def test_the_fake_answers_member_exists_to_a_taken_address(mailchimp: Harness) -> None:
    list_id, _ = mailchimp.seed_list("Customers")
    mailchimp.seed_member(list_id, "a@shop.test")
    mailchimp.seed_member(list_id, "b@shop.test")
    path = f"{mailchimp.base_url}/lists/{list_id}/members/{subscriber_hash('a@shop.test')}"
    async with httpx.AsyncClient(headers=_auth(mailchimp)) as http:
        taken = await http.patch(path, json={"email_address": "B@shop.test"})
        missing = await http.patch(path.replace(subscriber_hash("a@shop.test"), "0" * 32),
                                   json={"email_address": "c@shop.test"})
    assert taken.status_code == 400 and taken.json()["title"] == "Member Exists"
    assert missing.status_code == 404
