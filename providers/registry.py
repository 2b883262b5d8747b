"""Build a provider client from a profile, and show its credentials safely.

``make_client`` is the one place that maps a profile's ``provider`` name to a client
class; each class checks its own credential fields and raises ``ValueError`` naming
the missing one. ``mask_credentials`` is what the API shows instead of secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from providers.activecampaign import ActiveCampaignClient
from providers.base import ProviderClient
from providers.limits import ProviderLimits
from providers.mailchimp import MailchimpClient
from providers.retry import Retry
from providers.sendlane import SendlaneClient


class _Factory(Protocol):
    def __call__(
        self,
        credentials: Mapping[str, str],
        *,
        base_url: str | None,
        http: httpx.AsyncClient | None,
        limits: ProviderLimits,
        retry: Retry,
        **options: Any,
    ) -> ProviderClient: ...


FACTORIES: Mapping[str, _Factory] = {
    "mailchimp": MailchimpClient.from_credentials,
    "activecampaign": ActiveCampaignClient.from_credentials,
    "sendlane": SendlaneClient.from_credentials,
}
PROVIDERS = tuple(FACTORIES)

SECRET_FIELDS = frozenset({"api_key", "access_token", "api_token"})
PUBLIC_FIELDS = frozenset({"api_url", "dc"})
_DC_SUFFIX = re.compile(r"-([a-z]{2,3}\d{1,3})$")
MASK = "****"


def make_client(
    provider: str,
    credentials: Mapping[str, Any],
    base_url: str | None = None,
    http: httpx.AsyncClient | None = None,
    *,
    limits: ProviderLimits | None = None,
    retry: Retry | None = None,
    **options: Any,
) -> ProviderClient:
    """A client for ``provider`` ("mailchimp", "activecampaign", "sendlane").

    Pass the worker's one ``ProviderLimits`` so every client of an account shares its
    limiter; ``http`` is borrowed (not closed by the client) when given. ``options``
    go to the client class (``page_size``, ``concurrency``, ...).
    """
    factory = FACTORIES.get(provider)
    if factory is None:
        raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
    if not isinstance(credentials, Mapping):
        raise ValueError("credentials must be an object")
    clean = {str(k): str(v).strip() for k, v in credentials.items() if v is not None}
    return factory(
        clean,
        base_url=base_url.rstrip("/") if base_url else None,
        http=http,
        limits=limits if limits is not None else ProviderLimits(),
        retry=retry if retry is not None else Retry(),
        **options,
    )


def mask_secret(secret: str) -> str:
    """A hint that tells keys apart without revealing them (``****…3-us6``)."""
    match = _DC_SUFFIX.search(secret)
    if match and len(secret) - len(match.group(0)) >= 16:
        body = secret[: match.start()]
        return f"{MASK}…{body[-1]}-{match.group(1)}"
    shown = 4 if len(secret) >= 24 else 2 if len(secret) >= 12 else 0
    return f"{MASK}…{secret[-shown:]}" if shown else MASK


def mask_credentials(credentials: Mapping[str, Any]) -> dict[str, str]:
    """Credentials safe to show: secrets masked, ``api_url``/``dc`` kept, the rest hidden."""
    masked: dict[str, str] = {}
    for name, value in credentials.items():
        text = "" if value is None else str(value)
        if name in PUBLIC_FIELDS:
            masked[name] = text
        elif name in SECRET_FIELDS:
            masked[name] = mask_secret(text)
        else:
            masked[name] = MASK
    return masked
