"""Provider lists refresh by themselves, and one broken profile does not stop the others."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from providers.fakes.mailchimp import MailchimpFake
from providers.fakes.server import serve_fake
from streams.settings import Settings
from streams.storage.profiles import ProfileStore
from streams.sync.refresh import refresh_all, refresh_forever


async def test_new_lists_appear_without_a_manual_sync(settings: Settings, redis_client: Redis):
    store = ProfileStore(redis_client, settings.key_prefix, "r" * 32)
    good, broken = MailchimpFake(), MailchimpFake()
    good.seed_list("First")
    async with serve_fake(good) as good_url, serve_fake(broken) as broken_url:
        profile = await store.create("shop", "mailchimp", good.credentials(), good_url)
        other = await store.create("old", "mailchimp", broken.credentials(), broken_url)
        broken.api_keys.clear()  # its key is revoked after it was saved
        assert [lst["name"] for lst in (await store.get(profile.id)).lists] == []
        good.seed_list("Added at the provider later")
        stop = asyncio.Event()
        task = asyncio.create_task(refresh_forever(store, 0.05, stop))
        try:
            for _ in range(100):
                names = {lst["name"] for lst in (await store.get(profile.id)).lists}
                if "Added at the provider later" in names:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
        assert names == {"First", "Added at the provider later"}
        assert await refresh_all(store) == 1  # the revoked one fails alone
        assert (await store.get(other.id)).synced_at is None
