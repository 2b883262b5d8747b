"""Classified provider errors: what went wrong, and whether trying again can help.

The tree, modelled on aiokafka's errors (every error says whether it is ``retriable``):

- ``ProviderError``: base; carries the provider's own ``title``, ``detail``, ``code``
  and the HTTP ``status`` when there was an answer.
  - ``RateLimited`` (retriable): 429, or Mailchimp's empty-body throttling 403;
    ``retry_after`` in seconds when the provider sent one.
  - ``TransientError`` (retriable): 5xx, 408, timeouts, connection drops.
  - ``PermanentError``: the request is wrong and stays wrong (invalid email,
    compliance state, 422); goes to the dead-letter topic with ``reason``.
    - ``ListNotFound``: the list itself is gone (404): the whole call failed, and
      the profile or segment configuration needs attention.
  - ``AuthError``: bad or revoked credentials (401/403). Not a ``PermanentError``
    subclass on purpose: it concerns the whole profile, never one member, so code
    that records per-member permanent failures must not swallow it.
"""

from __future__ import annotations

from typing import ClassVar

import httpx


class ProviderError(Exception):
    """An auto-responder call failed; see the subclasses for what kind of failure."""

    retriable: ClassVar[bool] = False

    def __init__(
        self,
        title: str,
        detail: str = "",
        *,
        provider: str = "",
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.title = title
        self.detail = detail
        self.provider = provider
        self.status = status
        self.code = code
        super().__init__(self._message())

    @property
    def reason(self) -> str:
        """The provider's own words, fit for a dead-letter header: ``title: detail``."""
        if self.detail and self.detail != self.title:
            return f"{self.title}: {self.detail}"
        return self.title

    def _message(self) -> str:
        where = f"{self.provider} " if self.provider else ""
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{where}{status}{self.reason}".strip()


class RateLimited(ProviderError):
    """The provider throttled us; wait ``retry_after`` seconds when it says so."""

    retriable = True

    def __init__(
        self,
        title: str = "Too Many Requests",
        detail: str = "",
        *,
        retry_after: float | None = None,
        provider: str = "",
        status: int | None = 429,
        code: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(title, detail, provider=provider, status=status, code=code)


class TransientError(ProviderError):
    """A failure that may pass: 5xx, timeout, dropped connection."""

    retriable = True


class PermanentError(ProviderError):
    """The provider refused this request for good (invalid email, compliance state, 404)."""


class ListNotFound(PermanentError):
    """The list (audience) named in the call does not exist at the provider."""

    @classmethod
    def from_error(cls, error: ProviderError, list_id: str) -> ListNotFound:
        """The 404 ``error`` re-read as "this list is missing"."""
        return cls(error.title, f"list {list_id}: {error.detail}".rstrip(": "),
                   provider=error.provider, status=error.status, code=error.code)


class AuthError(ProviderError):
    """The credentials were refused (401/403): nothing works until they are fixed."""


def from_transport_error(provider: str, exc: httpx.TransportError) -> ProviderError:
    """Classify an httpx failure that happened before any HTTP answer arrived."""
    name = type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return PermanentError(name, str(exc), provider=provider)
    return TransientError(name, str(exc) or name, provider=provider)


def classify_status(
    status: int,
    title: str,
    detail: str = "",
    *,
    provider: str,
    code: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The error class the HTTP status implies, before any provider-specific tweak."""
    if status == 429:
        return RateLimited(
            title, detail, retry_after=retry_after, provider=provider, status=status, code=code
        )
    if status in (401, 403):
        return AuthError(title, detail, provider=provider, status=status, code=code)
    if status == 408 or (status >= 500 and status != 501):
        return TransientError(title, detail, provider=provider, status=status, code=code)
    return PermanentError(title, detail, provider=provider, status=status, code=code)
