"""The API on the session's real broker and Redis: served by uvicorn on a free loopback port
(`running_api`, as `segstream api` runs it), or called in-process over a profile store a test
built (`in_process_api`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.api import ApiDeps, create_app
from streams.app import api_app
from streams.ops.http import HealthChecks, serve
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore

TOKEN = "test-token-0123456789"


@dataclass
class Api:
    """A running API: an authenticated client, its base URL and the settings it runs with."""

    client: httpx.AsyncClient
    url: str
    settings: Settings


async def _metrics() -> str:
    return "# TYPE segstream_test gauge\nsegstream_test 1\n"


@contextlib.asynccontextmanager
async def running_api(settings: Settings, redis: Redis) -> AsyncIterator[Api]:
    assert settings.kafka_bootstrap
    checks = HealthChecks(settings.kafka_bootstrap, redis)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(checks.close)
        app = await stack.enter_async_context(api_app(settings, redis, checks, _metrics))
        server = await stack.enter_async_context(serve(app, "127.0.0.1", 0))
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        client = await stack.enter_async_context(httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30))
        yield Api(client, url, settings)


@contextlib.asynccontextmanager
async def in_process_api(
    settings: Settings, redis: Redis, profiles: ProfileStore
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the API app over `profiles` (e.g. with fast retries), authenticated; the
    state is `settings`' key prefix over `settings.partitions`. No producer: not for
    POST /events."""
    assert settings.kafka_bootstrap and settings.api_token
    checks = HealthChecks(settings.kafka_bootstrap, redis)
    app = create_app(ApiDeps(
        settings=settings, definitions=DefinitionStore(redis, settings.key_prefix),
        states=StateStore(redis, settings.key_prefix), producer=None, checks=checks,
        metrics=_metrics, partitions=settings.partitions, profiles=profiles))
    headers = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api", headers=headers) as client:
            yield client
    finally:
        await checks.close()


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.with_changes(api_token=SecretStr(TOKEN), secret_key=SecretStr("k" * 44))


@pytest.fixture
async def api(api_settings: Settings, redis_client: Redis) -> AsyncIterator[Api]:
    async with running_api(api_settings, redis_client) as running:
        yield running
