"""Error classification per provider shape, through ApiSession on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from providers import activecampaign, mailchimp, sendlane
from providers.errors import (
    AuthError,
    PermanentError,
    ProviderError,
    RateLimited,
    TransientError,
)
from providers.http import ApiSession, parse_retry_after
from providers.limits import AccountLimiter, LimitPolicy
from providers.retry import NoBackoff, Retry

Parser = Callable[[httpx.Response], ProviderError]
PROBLEM = {"content-type": "application/problem+json"}


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers or {})


@pytest.mark.parametrize(
    ("parser", "response", "kind", "title"),
    [
        (mailchimp.parse_error, answer(400, b'{"type":"t","title":"Member In Compliance State",'
                                       b'"status":400,"detail":"x is unsubscribed"}', PROBLEM),
         PermanentError, "Member In Compliance State"),
        (mailchimp.parse_error, answer(401, b'{"title":"API Key Invalid","status":401}', PROBLEM),
         AuthError, "API Key Invalid"),
        (mailchimp.parse_error, answer(404, b'{"title":"Resource Not Found","status":404}'),
         PermanentError, "Resource Not Found"),
        (mailchimp.parse_error, answer(403), RateLimited, "Too Many Requests"),
        (mailchimp.parse_error, answer(429), RateLimited, "Too Many Requests"),
        (mailchimp.parse_error, answer(503, b"<html>down</html>"), TransientError,
         "Service Unavailable"),
        (activecampaign.parse_error, answer(403, b'{"message":"You are not authorized"}'),
         AuthError, "You are not authorized"),
        (activecampaign.parse_error,
         answer(422, b'{"errors":[{"title":"Email address is invalid","detail":"bad",'
                     b'"code":"email_invalid","source":{"pointer":"/data/attributes/email"}}]}'),
         PermanentError, "Email address is invalid"),
        (activecampaign.parse_error, answer(404, b'{"message":"No Result found for List"}'),
         PermanentError, "No Result found for List"),
        (activecampaign.parse_error, answer(429, b"{}", {"Retry-After": "2"}), RateLimited,
         "Too Many Requests"),
        (sendlane.parse_error, answer(401, b"<!DOCTYPE html><title>Unauthorized</title>",
                                      {"content-type": "text/html"}), AuthError, "Unauthorized"),
        (sendlane.parse_error, answer(422, b'{"message":"The given data was invalid.",'
                                      b'"errors":{"contacts.0.email":["must be valid"]}}'),
         sendlane.ValidationFailed, "The given data was invalid."),
        (sendlane.parse_error, answer(429, b'{"message":"Too Many Attempts."}'), RateLimited,
         "Too Many Attempts."),
        (sendlane.parse_error, answer(500, b""), TransientError, "Internal Server Error"),
    ],
)
def test_provider_error_shapes_are_classified(
    parser: Parser, response: httpx.Response, kind: type[ProviderError], title: str
) -> None:
    error = parser(response)
    assert type(error) is kind
    assert error.title == title and error.status == response.status_code
    assert error.retriable == (kind in (RateLimited, TransientError))


def test_details_keep_the_providers_words() -> None:
    ac = activecampaign.parse_error(answer(422, b'{"errors":[{"title":"T","detail":"D",'
                                                b'"code":"c"}]}'))
    assert (ac.reason, ac.code) == ("T: D", "c")
    sl = sendlane.parse_error(answer(422, b'{"message":"M","errors":{"contacts.2.email":["bad"]}}'))
    assert isinstance(sl, sendlane.ValidationFailed)
    assert sl.fields == {"contacts.2.email": ["bad"]} and "contacts.2.email: bad" in sl.detail


def test_retry_after_header_is_read() -> None:
    assert activecampaign.parse_error(answer(429, b"", {"Retry-After": "3"})).retry_after == 3.0  # type: ignore[attr-defined]
    assert sendlane.parse_error(answer(429, b"{}")).retry_after is None  # type: ignore[attr-defined]
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def _session(handler: Callable[[httpx.Request], httpx.Response], http: httpx.AsyncClient,
             limiter: AccountLimiter | None = None, attempts: int = 1) -> ApiSession:
    return ApiSession(
        provider="activecampaign", base_url="https://acct.api-us1.com/api/3", headers={},
        parse_error=activecampaign.parse_error, http=http,
        limiter=limiter or AccountLimiter(LimitPolicy()),
        retry=Retry(NoBackoff(), attempts, on_retry=lambda *a: None),
    )


@pytest.mark.parametrize(
    "exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
            httpx.RemoteProtocolError("peer closed connection")],
)
async def test_transport_failures_are_transient(exc: Exception) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc

    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        with pytest.raises(TransientError):
            await _session(fail, http).call("GET", "/lists")


async def test_truncated_success_body_is_transient() -> None:
    def cut(request: httpx.Request) -> httpx.Response:
        return answer(200, b'{"lists": [')

    async with httpx.AsyncClient(transport=httpx.MockTransport(cut)) as http:
        with pytest.raises(TransientError, match="Malformed"):
            await _session(cut, http).call("GET", "/lists")


async def test_permanent_errors_are_tried_once() -> None:
    seen: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answer(422, b'{"errors":[{"title":"Invalid"}]}')

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        with pytest.raises(PermanentError):
            await _session(refuse, http, attempts=5).call("POST", "/contact/sync", json={})
    assert seen == ["/api/3/contact/sync"]


async def test_retry_after_pauses_the_whole_account() -> None:
    answers = iter([answer(429, b"{}", {"Retry-After": "0.3"})])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or answer(200, b'{"lists": []}')

    limiter = AccountLimiter(LimitPolicy())
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        session = _session(handler, http, limiter)
        with pytest.raises(RateLimited):
            await session.call("GET", "/lists")
        started = time.monotonic()
        await asyncio.gather(session.call("GET", "/lists"), session.call("GET", "/lists"))
    assert time.monotonic() - started >= 0.25  # sibling calls waited out the Retry-After
