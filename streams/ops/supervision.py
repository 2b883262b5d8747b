"""Keeping roles running through outages: wait for the services, restart what an outage ended.

A role (processor, sync worker) that fails because Redis or the broker went away is not a
reason for the process to exit: `supervise` waits until both answer again (probing them with
capped exponential backoff and full jitter: redis-py's `ExponentialWithJitterBackoff`), then
runs the role again, which resumes from what Redis holds (exactly-once: offsets are stored with
the state). A processor fenced out of a partition (`CommitFenced`: the partition moved on) is
restarted at once. Anything else (a bug, bad configuration) ends the role with its error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from redis.backoff import ExponentialWithJitterBackoff

from streams.aio import pause
from streams.ops.outages import Outages, describe, service_of
from streams.storage.state import CommitFenced

log = logging.getLogger("segstream.supervision")

BACKOFF_BASE_S: Final = 0.25
BACKOFF_CAP_S: Final = 15.0
HEALTHY_RUN_S: Final = 60.0
"""A role that ran this long before failing starts its backoff afresh."""

Probe = Callable[[], Awaitable[Mapping[str, str]]]
"""Checks the backing services: service name -> "ok", or why it is not."""


async def wait_for_services(probe: Probe, outages: Outages, stop: asyncio.Event) -> bool:
    """Return once every service answers (True), or `stop` is set first (False)."""
    backoff = ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S)
    attempt = 0
    while not stop.is_set():
        results = await probe()
        for service, result in results.items():
            if result == "ok":
                outages.up(service)
            else:
                outages.down(service, result)
        if all(result == "ok" for result in results.values()):
            return True
        attempt += 1
        await pause(stop, backoff.compute(attempt))
    return False


async def supervise(
    name: str, run: Callable[[], Awaitable[None]], probe: Probe, outages: Outages,
    stop: asyncio.Event,
) -> None:
    """Run a role until it returns (it was stopped), restarting it after outages."""
    backoff = ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S)
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await run()
            return
        except CommitFenced as exc:
            log.info("%s: %s; restarting it", name, exc)
            continue
        except Exception as exc:
            service = service_of(exc)
            if service is None:
                raise
            failures = 1 if time.monotonic() - started > HEALTHY_RUN_S else failures + 1
            outages.failed(service)
            log.warning("%s stopped by an outage of %s (%s); it restarts once the services "
                        "answer", name, service, describe(exc))
        await pause(stop, backoff.compute(failures))
        if not await wait_for_services(probe, outages, stop):
            return
        log.info("%s: restarting", name)
