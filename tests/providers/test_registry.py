"""make_client: base URLs and auth derived from credentials; masking never shows secrets."""

from __future__ import annotations

import base64

import httpx
import pytest

from providers.activecampaign import ActiveCampaignClient
from providers.mailchimp import MailchimpClient
from providers.registry import make_client, mask_credentials
from providers.retry import NoBackoff, Retry
from providers.sendlane import SendlaneClient

MC_KEY = "0123456789abcdef0123456789abcd13-us6"


async def first_request(provider: str, credentials: dict[str, str],
                        base_url: str | None = None) -> httpx.Request:
    """The request a client sends to validate credentials (answered 200, never sent)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        make_client(provider, credentials, base_url, http, retry=Retry(NoBackoff(), 1)) as client,
    ):
        await client.validate_credentials()
    return seen[0]


async def test_mailchimp_url_from_the_key_suffix_and_basic_auth() -> None:
    request = await first_request("mailchimp", {"api_key": MC_KEY})
    assert str(request.url).startswith("https://us6.api.mailchimp.com/3.0/lists?")
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode().endswith(f":{MC_KEY}")


async def test_mailchimp_oauth_uses_bearer_and_dc() -> None:
    request = await first_request("mailchimp", {"access_token": "tok", "dc": "us19"})
    assert request.url.host == "us19.api.mailchimp.com"
    assert request.headers["authorization"] == "Bearer tok"


async def test_activecampaign_url_from_api_url() -> None:
    request = await first_request(
        "activecampaign", {"api_url": "https://shop.api-us1.com/", "api_key": "k"}
    )
    assert str(request.url).startswith("https://shop.api-us1.com/api/3/lists?")
    assert request.headers["api-token"] == "k"


async def test_sendlane_fixed_url_and_bearer() -> None:
    request = await first_request("sendlane", {"api_token": "t"})
    assert str(request.url).startswith("https://api.sendlane.com/v2/lists?")
    assert request.headers["authorization"] == "Bearer t"


async def test_base_url_overrides_the_api_root() -> None:
    request = await first_request("mailchimp", {"api_key": "nodc"}, "http://127.0.0.1:8999/3.0/")
    assert str(request.url).startswith("http://127.0.0.1:8999/3.0/lists?")


@pytest.mark.parametrize(
    ("provider", "credentials", "field"),
    [
        ("mailchimp", {}, "api_key"),
        ("mailchimp", {"api_key": "nodatacenter"}, "api_key"),
        ("mailchimp", {"access_token": "tok"}, "dc"),
        ("activecampaign", {"api_url": "https://x.api-us1.com"}, "api_key"),
        ("activecampaign", {"api_key": "k"}, "api_url"),
        ("sendlane", {"token": "t"}, "api_token"),
    ],
)
def test_missing_credentials_are_named(provider: str, credentials: dict[str, str],
                                       field: str) -> None:
    with pytest.raises(ValueError, match=rf"credentials\.{field}"):
        make_client(provider, credentials)


def test_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown provider 'aweber'"):
        make_client("aweber", {})


async def test_client_classes() -> None:
    pairs = [("mailchimp", {"api_key": MC_KEY}, MailchimpClient),
             ("activecampaign", {"api_url": "https://a.api-us1.com", "api_key": "k"},
              ActiveCampaignClient),
             ("sendlane", {"api_token": "t"}, SendlaneClient)]
    for provider, credentials, cls in pairs:
        async with make_client(provider, credentials) as client:
            assert type(client) is cls and client.provider == provider


def test_mask_keeps_hints_not_secrets() -> None:
    masked = mask_credentials({"api_key": MC_KEY})
    assert masked == {"api_key": "****…3-us6"}
    ac_key = "f3a1c2d4e5b6a798" * 3 + "0011223344556677"
    ac = mask_credentials({"api_url": "https://shop.api-us1.com", "api_key": ac_key})
    assert ac == {"api_url": "https://shop.api-us1.com", "api_key": "****…6677"}
    assert mask_credentials({"api_token": "short"}) == {"api_token": "****"}
    assert mask_credentials({"access_token": "t" * 16, "dc": "us6", "password": "p"}) == {
        "access_token": "****…tt", "dc": "us6", "password": "****"}


def test_mask_never_contains_the_secret() -> None:
    for secret in [MC_KEY, "a" * 64, "abcdefghijkl", "x", ""]:
        for name in ("api_key", "access_token", "api_token"):
            shown = mask_credentials({name: secret})[name]
            assert secret[:-4] not in shown or len(secret) <= 4
            assert len(shown.replace("****…", "")) <= 6
