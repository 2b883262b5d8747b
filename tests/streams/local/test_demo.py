"""`segstream up --demo`'s extra: it keeps its fake Mailchimp until the roles have stopped."""

from __future__ import annotations

import asyncio
import io

from cryptography.fernet import Fernet
from pydantic import SecretStr
from redis.asyncio import Redis
from rich.console import Console

from streams.engine.processor import Processor
from streams.local.demo import MAILCHIMP_SEGMENT, run_demo
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.helpers import wait_for


async def _started_demo(
    settings: Settings, redis: Redis
) -> tuple[asyncio.Task[None], asyncio.Event, asyncio.Event]:
    """The demo task, once its segments are stored, with its `stop` and `roles_stopped`."""
    stop, roles_stopped = asyncio.Event(), asyncio.Event()
    settings = settings.with_changes(secret_key=SecretStr(Fernet.generate_key().decode()))
    demo = asyncio.create_task(run_demo(
        settings, redis, Processor(settings, redis), stop, roles_stopped,
        Console(file=io.StringIO()), rate=50))
    store = DefinitionStore(redis, settings.key_prefix)

    async def segments_stored() -> bool:
        return MAILCHIMP_SEGMENT in (await store.load()).live

    await wait_for(segments_stored, what="the demo's segments")
    return demo, stop, roles_stopped


async def test_the_demo_keeps_its_fake_provider_until_the_roles_stopped(
    settings: Settings, redis_client: Redis
) -> None:
    demo, stop, roles_stopped = await _started_demo(settings, redis_client)
    stop.set()
    await asyncio.sleep(1.0)
    assert not demo.done(), "the demo ended while the sync worker might still deliver to it"
    roles_stopped.set()
    await asyncio.wait_for(demo, 10)


async def test_a_cancelled_demo_ends_without_waiting_for_the_roles(
    settings: Settings, redis_client: Redis
) -> None:
    """Cancelled (an error elsewhere), nobody will set `roles_stopped`: it must not wait."""
    demo, stop, _ = await _started_demo(settings, redis_client)
    demo.cancel()
    done, _ = await asyncio.wait({demo}, timeout=10)
    assert demo in done and demo.cancelled()
    assert stop.is_set()  # what it drives was told to stop
