"""The sync worker's and provider clients' metrics while a provider fails, then recovers.

The worker reports to a `Metrics` registry as in a running `segstream sync`; its provider is the
local Mailchimp fake answering 5xx, then healthy again.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from streams.ops.metrics import Metrics
from streams.settings import Settings
from streams.sync.worker import SyncCounters, run_sync
from tests.providers.harness import FAST_POLICIES, Harness
from tests.streams.helpers import wait_for
from tests.streams.ops.scrape import value
from tests.streams.sync.test_worker import FAST, all_committed, change, send, setup_target


@pytest.fixture
def sync_settings(settings: Settings) -> Settings:
    return settings.with_changes(secret_key=SecretStr("s" * 40), session_timeout_ms=3000)


async def test_provider_failures_retries_and_confirmations_are_counted(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness
) -> None:
    await setup_target(sync_settings, redis_client, mailchimp)
    metrics = Metrics(platform=False)
    counters = SyncCounters()
    metrics.watch_sync(counters)
    mailchimp.fake.faults.rate_5xx = 1.0  # the provider answers 5xx to everything
    changes = [change("seg-vip", f"m{i}", True) for i in range(5)]
    await send(sync_settings, [*changes, change("seg-vip", "anon", True, email=None)])
    stop = asyncio.Event()
    task = asyncio.create_task(run_sync(
        sync_settings, redis_client, stop, options=dataclasses.replace(FAST, max_attempts=2),
        counters=counters, observer=metrics,
        limits=ProviderLimits(FAST_POLICIES, observer=metrics)))
    try:
        async def failing() -> bool:
            text = (await metrics.render()).decode()
            return (value(text, "segstream_provider_calls_total", provider="mailchimp",
                          outcome="transient") >= 2
                    and value(text, "segstream_provider_retries_total", provider="mailchimp") >= 1
                    and value(text, "segstream_sync_profile_holds_total") >= 1)

        await wait_for(failing, timeout=20, what="the failures counted")
        text = (await metrics.render()).decode()
        assert value(text, "segstream_sync_members_synced_total") == 0
        assert value(text, "segstream_provider_calls_total", outcome="ok") == 0
        statuses = {s for s in ("500", "502", "503", "504")
                    if value(text, "segstream_provider_calls_total", status=s)}
        assert statuses, "a 5xx status is a label of the failed calls"

        mailchimp.fake.faults.rate_5xx = 0.0
        await wait_for(lambda: all_committed(sync_settings), timeout=30,
                       what="every change confirmed after the provider recovered")
    finally:
        stop.set()
        await task
    text = (await metrics.render()).decode()
    assert value(text, "segstream_sync_members_synced_total") == 5
    assert value(text, "segstream_provider_calls_total", provider="mailchimp", outcome="ok") >= 1
    assert value(text, "segstream_provider_call_seconds_count", provider="mailchimp") == value(
        text, "segstream_provider_calls_total", provider="mailchimp")
    assert value(text, "segstream_membership_to_provider_seconds_count") == 5
    assert value(text, "segstream_dead_letters_total", stage="sync", reason="missing_email") == 1
