"""One provider account's HTTP access: base URL, auth, limiter, retry, error parsing.

Every provider client sends its requests through an ``ApiSession``. Each attempt
takes a permit from the account's limiter, sends, reads the answer, and turns a
non-2xx answer into a classified ``ProviderError`` with the provider's parser; the
``Retry`` object decides whether to try again. A ``Retry-After`` pauses the whole
account so sibling tasks do not walk into the same 429; a call to an endpoint with a
limit of its own (``also``) takes that limiter's permit before the account's, and a
``Retry-After`` on it pauses that endpoint only.
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from providers.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
    from_transport_error,
)
from providers.limits import AccountLimiter
from providers.retry import Retry

ErrorParser = Callable[[httpx.Response], ProviderError]
Params = Mapping[str, str | int]

USER_AGENT = "segstream-providers/0.1"
DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A successful answer: status and decoded JSON body (None when empty)."""

    status: int
    body: Any


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), None if absent."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def json_or_none(response: httpx.Response) -> Any:
    """The JSON body, or None when it is empty or not JSON (HTML error pages)."""
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def text_snippet(response: httpx.Response, limit: int = 200) -> str:
    """A short plain-text view of a non-JSON body, for error details."""
    text = response.text.strip()
    return " ".join(text.split())[:limit]


def secret_digest(secret: str) -> str:
    """A stable, non-reversible account key fragment for a credential."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def outcome_of(error: ProviderError) -> str:
    """The class of a failed call, as observers are told it."""
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, AuthError):
        return "auth"
    if isinstance(error, TransientError):
        return "transient"
    if isinstance(error, PermanentError):
        return "permanent"
    return "error"


class ApiSession:
    """Sends requests for one account under its limiter and retry policy."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        parse_error: ErrorParser,
        limiter: AccountLimiter,
        retry: Retry,
        http: httpx.AsyncClient | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.retry = retry
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **headers}
        self._parse_error = parse_error
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        also: AccountLimiter | None = None,
    ) -> ApiResponse:
        """Send with retries; return the 2xx answer or raise a classified error.

        ``also``: the limiter of an endpoint with a limit of its own, taken first. Each
        attempt and retry is told to the limiter's observer (``providers.observe``).
        """
        observer, attempts = self.limiter.observer, 0

        async def attempt() -> ApiResponse:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                observer.retried(self.provider)
            return await self._attempt(method, path, params, json, also)

        return await self.retry.call_with_retry(attempt)

    async def _attempt(
        self, method: str, path: str, params: Params | None, json: Any,
        also: AccountLimiter | None,
    ) -> ApiResponse:
        headers = dict(self._headers)
        content = None
        if json is not None:
            content = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        async with AsyncExitStack() as permits:
            if also is not None:
                await permits.enter_async_context(also.slot())
            await permits.enter_async_context(self.limiter.slot())
            started = time.monotonic()
            try:
                response = await self._http.request(
                    method, self.base_url + path, params=params, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                self.limiter.observer.call_finished(
                    self.provider, "network", None, time.monotonic() - started)
                raise from_transport_error(self.provider, exc) from exc
        seconds = time.monotonic() - started
        if response.is_success:
            self.limiter.observer.call_finished(
                self.provider, "ok", response.status_code, seconds)
            return ApiResponse(response.status_code, self._decode(response))
        error = self._parse_error(response)
        self.limiter.observer.call_finished(
            self.provider, outcome_of(error), response.status_code, seconds)
        if isinstance(error, RateLimited) and error.retry_after:
            (also or self.limiter).pause(error.retry_after)
        raise error

    def _decode(self, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            # A 2xx we cannot read was most likely cut short: worth another try.
            raise TransientError(
                "Malformed Response", text_snippet(response), provider=self.provider,
                status=response.status_code,
            ) from exc

    async def aclose(self) -> None:
        """Close the HTTP client if this session created it."""
        if self._owns_http:
            await self._http.aclose()
