"""Turns of the event loop for aiokafka's tasks amid CPU-bound work."""

from __future__ import annotations

import asyncio
from typing import Final

IO_STEPS: Final = 3
"""Event-loop turns aiokafka needs to put a request on the wire once asked (a batch handed to
the producer, or records taken from the fetcher): measured, 0-1 turns left the produce request
waiting behind 20 ms of CPU-bound work, 2-6 turns sent it within 0.1 ms."""


async def let_io_run() -> None:
    """Give the producer's and fetcher's tasks the turns they need before a stretch of work
    that does not yield (preparing a batch): otherwise their requests wait for it to end."""
    for _ in range(IO_STEPS):
        await asyncio.sleep(0)
