"""Periodic refresh of every auto-responder profile's lists, segments and tags.

Merchants add lists and tags at their provider; the segment builder should offer them without
anyone pressing "sync". One failing profile (bad key, provider down) is logged and retried on the
next round; it never stops the others or the API.
"""

from __future__ import annotations

import asyncio
import logging

from providers.errors import ProviderError
from providers.profiles import ProfileError
from streams.aio import pause
from streams.storage.profiles import ProfileStore

log = logging.getLogger("segstream.refresh")


async def refresh_all(store: ProfileStore) -> int:
    """Sync the lists of every profile once; returns how many succeeded."""
    done = 0
    for profile in await store.list():
        try:
            await store.sync_lists(profile.id)
            done += 1
        except (ProviderError, ProfileError) as exc:
            log.warning("profile %s (%s): list refresh failed: %s", profile.id, profile.provider,
                        exc.__class__.__name__,
                        extra={"profile": profile.id, "provider": profile.provider})
    return done


async def refresh_forever(store: ProfileStore, interval_s: float, stop: asyncio.Event) -> None:
    """`refresh_all` every `interval_s` seconds until `stop`."""
    while not stop.is_set():
        await pause(stop, interval_s)
        if not stop.is_set():
            await refresh_all(store)
