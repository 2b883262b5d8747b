"""Provider-neutral views of the fakes, so one test class runs against all three.

A ``Harness`` seeds a fake and reads its state in the contract's terms (list,
segment or tag, subscribed) and builds real clients pointed at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from providers.ac_import import ImportWait
from providers.base import ProviderClient
from providers.fakes.activecampaign import ActiveCampaignFake
from providers.fakes.base import FakeProvider
from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.mailchimp import subscriber_hash as mailchimp_hash
from providers.fakes.sendlane import SendlaneFake
from providers.limits import AC_BULK_IMPORT, LimitPolicy, ProviderLimits
from providers.registry import make_client
from providers.retry import FullJitterBackoff, Retry

PROVIDERS = ("mailchimp", "activecampaign", "sendlane")

# Generous limits for tests that are not about limits (the real ones make them slow).
FAST_POLICIES = {
    "activecampaign": LimitPolicy(max_calls=200, period=1.0),
    AC_BULK_IMPORT: LimitPolicy(max_calls=100, period=1.0),
    "sendlane": LimitPolicy(max_calls=2000, period=1.0),
}
FAST_IMPORT_WAIT = ImportWait(first=0.01, cap=0.05, limit=5.0)


def fast_retry(max_attempts: int = 10, **kwargs: Any) -> Retry:
    """A retry policy with millisecond backoff, so fault tests run quickly."""
    return Retry(FullJitterBackoff(base=0.005, cap=0.1), max_attempts, **kwargs)


def build_fake(provider: str) -> FakeProvider:
    """A fake with its provider limit loosened to match ``FAST_POLICIES``."""
    if provider == "mailchimp":
        return MailchimpFake(seed=7)
    if provider == "activecampaign":
        return ActiveCampaignFake(rate_limit=(200, 1.0), bulk_rate_limit=(100, 100, 1.0),
                                  import_delay=0.02, injected_retry_after="0.02",
                                  fractional_retry_after=True, seed=7)
    return SendlaneFake(rate_limit=(2000, 1.0), write_delay=0.03, seed=7)


@dataclass
class Harness:
    """One fake behind a loopback URL, with contract-level seeding and inspection."""

    provider: str
    fake: Any  # the concrete fake (MailchimpFake, ...): tests reach into its state
    base_url: str
    retries: list[str] = field(default_factory=list)

    def client(self, *, limits: ProviderLimits | None = None, retry: Retry | None = None,
               credentials: dict[str, str] | None = None, **options: Any) -> ProviderClient:
        """A real client for this fake (fast limits, retry and import polling unless given)."""
        if self.provider == "activecampaign":
            options.setdefault("import_wait", FAST_IMPORT_WAIT)
        return make_client(
            self.provider, credentials or self.fake.credentials(), self.base_url,
            limits=limits or ProviderLimits(FAST_POLICIES),
            retry=retry or fast_retry(on_retry=self.record_retry), **options,
        )

    def record_retry(self, error: Exception, failures: int, delay: float) -> None:
        """``Retry(on_retry=...)`` hook: keep what was retried, for assertions."""
        self.retries.append(str(error))

    def seed_list(self, name: str, *segments: str) -> tuple[str, dict[str, str]]:
        lid, segs = self.fake.seed_list(name, segments)
        return str(lid), dict(segs)

    def seed_member(self, list_id: str, email: str, *, subscribed: bool = True,
                    segment: str | None = None) -> None:
        """Someone already on the list, subscribed or (sticky) unsubscribed, in ``segment``."""
        if isinstance(self.fake, MailchimpFake):
            status = "subscribed" if subscribed else "unsubscribed"
            self.fake.state.add_member(list_id, email, status)
            if segment is not None:
                lst = self.fake.state.lists[list_id]
                lst.segments[int(segment)].members.add(mailchimp_hash(email))
        elif isinstance(self.fake, ActiveCampaignFake):
            tags = [int(segment)] if segment is not None else []
            self.fake.state.add_contact(email, lists={int(list_id): 1 if subscribed else 2},
                                        tags=tags)
        else:
            tags = [int(segment)] if segment is not None else []
            self.fake.state.add_contact(email, subscribed=subscribed, lists=[int(list_id)],
                                        tags=tags)

    def seed_invalid(self, email: str) -> None:
        """An address the provider refuses as invalid or fake-looking."""
        self.fake.state.invalid_emails.add(email.lower())

    async def settle(self) -> None:
        """Wait for asynchronous writes (Sendlane, ActiveCampaign imports) to be applied."""
        if isinstance(self.fake, SendlaneFake):
            await self.fake.state.settle()
        elif isinstance(self.fake, ActiveCampaignFake):
            await self.fake.state.imports.settle()

    def on_list(self, list_id: str, email: str) -> bool:
        if isinstance(self.fake, MailchimpFake):
            return self.fake.state.lists[list_id].active(email) is not None
        if isinstance(self.fake, ActiveCampaignFake):
            return self.fake.state.list_status(email, int(list_id)) is not None
        contact = self.fake.state.by_email(email)
        return contact is not None and int(list_id) in contact.lists

    def in_segment(self, list_id: str, segment_id: str, email: str) -> bool:
        if isinstance(self.fake, MailchimpFake):
            return email.lower() in self.fake.state.segment_emails(list_id, segment_id)
        if isinstance(self.fake, ActiveCampaignFake):
            return int(segment_id) in self.fake.state.tag_ids(email)
        contact = self.fake.state.by_email(email)
        return contact is not None and int(segment_id) in contact.tags

    def subscribed(self, list_id: str, email: str) -> bool:
        """Whether the provider would mail this person (archived Mailchimp members count)."""
        if isinstance(self.fake, MailchimpFake):
            member = self.fake.state.member(list_id, email)
            return member is not None and member.status == "subscribed"
        if isinstance(self.fake, ActiveCampaignFake):
            return self.fake.state.list_status(email, int(list_id)) == 1
        contact = self.fake.state.by_email(email)
        return contact is not None and contact.subscribed

    def first_name(self, list_id: str, email: str) -> str | None:
        if isinstance(self.fake, MailchimpFake):
            member = self.fake.state.member(list_id, email)
            return member.merge_fields.get("FNAME") if member else None
        contact = self.fake.state.by_email(email)
        return contact.first_name if contact else None

    def resubscribes(self) -> int:
        """How many sticky unsubscribes the API turned back (must stay 0)."""
        if isinstance(self.fake, MailchimpFake):
            return len(self.fake.state.resubscribes())
        return len(self.fake.state.resubscribes)
