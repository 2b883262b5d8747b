"""Small asyncio helpers every role uses: turns for I/O amid CPU work, and stoppable waits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

IO_STEPS: Final = 3
"""Event-loop turns aiokafka needs to put a request on the wire once asked (a batch handed to
the producer, or records taken from the fetcher); fewer leave the request waiting behind the
CPU-bound work that follows (docs/design.md, "Turns of the event loop")."""


async def let_io_run() -> None:
    """Give the producer's and fetcher's tasks the turns they need before a stretch of work
    that does not yield (preparing a batch): otherwise their requests wait for it to end."""
    for _ in range(IO_STEPS):
        await asyncio.sleep(0)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait until `stop` is set or `seconds` passed.

    `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` can swallow a cancellation that
    arrives as its inner wait ends, and a cancelled loop around it then runs on.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
