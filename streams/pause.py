"""Waiting for a stop event with a time limit, without losing a cancellation."""

from __future__ import annotations

import asyncio
import contextlib


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait until `stop` is set or `seconds` passed.

    `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can swallow a cancellation that
    arrives as its inner wait ends, and a cancelled loop around it then runs on. (The demo's
    cancelled loop seen in CI was redis-py's `wait_for`, mended in `streams.redis_client`.)
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
