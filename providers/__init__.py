"""Auto-responder providers: Mailchimp, ActiveCampaign and Sendlane clients, and their fakes.

How a sync worker uses this package::

    limits = ProviderLimits()              # one per process: limiters shared per account
    async with make_client(profile.provider, credentials, profile.base_url,
                           limits=limits) as client:
        result = await client.upsert_members(list_id, members, segment_id)
        # result.succeeded: on the list and in the segment or tag; result.permanent:
        # dead-letter with failure.reason; result.retriable: try again later.
        moved = await client.change_emails(list_id, [EmailChange(old, member)], segment_id)

Raised for a whole call (nothing in it can be counted done): ``AuthError`` (fix the
profile), ``ListNotFound`` (a ``PermanentError``), and ``RateLimited`` /
``TransientError`` once the ``Retry`` policy gave up. Every call is safe to repeat.

Leaving: ``remove_from_segment`` when the segment names a segment or tag, else
``remove_from_list``; neither unsubscribes anyone. ActiveCampaign cannot take a
contact off a list without unsubscribing them, so its ``supports_list_removal`` is
False and ``remove_from_list`` fails each member with that reason.

Modules: ``base`` (the ``ProviderClient`` contract and values), ``errors``,
``retry``, ``limits``, ``http`` (the per-account session), one module per provider
(and ``ac_import``, ActiveCampaign's bulk import), ``registry`` (``make_client``,
``mask_credentials``), and ``fakes`` (local servers).
"""

from providers.base import (
    BatchResult,
    EmailChange,
    Member,
    MemberFailure,
    ProviderClient,
    ProviderList,
    ProviderSegment,
)
from providers.errors import (
    AuthError,
    ListNotFound,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from providers.limits import LimitPolicy, ProviderLimits
from providers.registry import PROVIDERS, make_client, mask_credentials
from providers.retry import FullJitterBackoff, Retry

__all__ = [
    "PROVIDERS",
    "AuthError",
    "BatchResult",
    "EmailChange",
    "FullJitterBackoff",
    "LimitPolicy",
    "ListNotFound",
    "Member",
    "MemberFailure",
    "PermanentError",
    "ProviderClient",
    "ProviderError",
    "ProviderLimits",
    "ProviderList",
    "ProviderSegment",
    "RateLimited",
    "Retry",
    "TransientError",
    "make_client",
    "mask_credentials",
]
