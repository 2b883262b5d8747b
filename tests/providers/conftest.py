"""Fixtures: one loopback server per fake provider for the session, a fresh fake per test.

Starting and stopping uvicorn costs ~0.2 s, so each provider gets one server whose
app (``FakeSlot``) forwards to the fake the current test installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from starlette.types import Receive, Scope, Send

from providers.fakes.base import FakeProvider
from providers.fakes.server import FAKES, serve_fake
from tests.providers.harness import PROVIDERS, Harness, build_fake


class FakeSlot:
    """An ASGI app forwarding to whichever fake the running test put in it."""

    def __init__(self, api_prefix: str) -> None:
        self.api_prefix = api_prefix
        self.target: FakeProvider | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no fake installed for this test"
        await self.target(scope, receive, send)


@pytest.fixture(scope="session")
async def fake_servers() -> AsyncIterator[dict[str, tuple[FakeSlot, str]]]:
    async with AsyncExitStack() as stack:
        servers = {}
        for provider in PROVIDERS:
            slot = FakeSlot(FAKES[provider].api_prefix)
            servers[provider] = (slot, await stack.enter_async_context(serve_fake(slot)))
        yield servers


async def _harness(provider: str, servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    slot, base_url = servers[provider]
    fake = build_fake(provider)
    slot.target = fake
    return Harness(provider, fake, base_url)


@pytest.fixture(params=PROVIDERS)
async def harness(
    request: pytest.FixtureRequest, fake_servers: dict[str, tuple[FakeSlot, str]]
) -> Harness:
    """Each provider's fake in turn (tests using it run three times)."""
    return await _harness(request.param, fake_servers)


@pytest.fixture
async def mailchimp(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("mailchimp", fake_servers)


@pytest.fixture
async def activecampaign(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("activecampaign", fake_servers)


@pytest.fixture
async def sendlane(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("sendlane", fake_servers)
