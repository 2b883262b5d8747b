"""Freshness end to end: memberships flip when time alone makes them true, with real waits.

A customer whose last order is 30 days minus a few seconds old leaves "ordered within 30 days"
and enters "no order in 30 days" a few seconds later with no event, `reason: time`; also across
a `kill -9` while the timer is due, after an edit that changes the window, and for a segment
built on a time-relative one.
"""

from __future__ import annotations

import asyncio
import calendar
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from redis.asyncio import Redis

from streams.broker.topics import TopicNames
from streams.settings import Settings
from streams.storage.definitions import DefinitionStore
from tests.streams.helpers import (
    changes,
    create_topics,
    event,
    members,
    produce,
    read_topic,
    role_env,
    running_processor,
    wait_for,
)

DAY = 86_400_000
SECOND = 1_000


def window(op: str, days: int) -> dict[str, Any]:
    return {"name": f"last order {op} {days} days", "groups": [{"conditions": [
        {"field": "last_order_at", "op": op, "value": {"days": days}}]}]}


BUILT_ON = {"name": "Lapsed (built on lapsed)", "groups": [{"conditions": [
    {"field": "segments", "op": "includes_any", "value": ["lapsed"]}]}]}


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def ms(text: str) -> int:
    """Epoch ms of a `changed_at` ("2026-11-28T17:32:00.120Z")."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1000 + int(text[20:23])


def an_order(customer_id: str, at_ms: int) -> dict[str, Any]:
    return event("order.placed", customer_id, f"{customer_id}-o1",
                 {"order_id": f"{customer_id}-o1", "total": "20"}, at=iso(at_ms))


async def time_flips(settings: Settings, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """Membership records until `count` of them have `reason: time`."""
    topic = TopicNames(settings.topic_prefix).membership
    deadline = time.monotonic() + timeout
    while True:
        sent = changes(await read_topic(settings, topic, 0, timeout=1))
        timed = [c for c in sent if c["reason"] == "time"]
        if len({c["event_id"] for c in timed}) >= count or time.monotonic() > deadline:
            return timed


async def test_an_order_30_days_minus_5_s_old_flips_about_5_s_later(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    await definitions.put("recent", window("within_last", 30))
    await definitions.put("lapsed", window("not_within_last", 30))
    await definitions.put("built-on", BUILT_ON)
    async with running_processor(settings, redis_client):
        placed = int(time.time() * 1000) - 30 * DAY + 5 * SECOND
        due = placed + 30 * DAY + 1
        await produce(settings, [an_order("c-fresh", placed)])

        async def is_recent() -> bool:
            return await members(settings, redis_client, "recent") == {"c-fresh"}

        await wait_for(is_recent, timeout=20, what="the order applied")
        assert await members(settings, redis_client, "lapsed") == set()
        flips = await time_flips(settings, 3)
    assert sorted((c["segment_id"], c["type"]) for c in flips) == [
        ("built-on", "segment.member_added"), ("lapsed", "segment.member_added"),
        ("recent", "segment.member_removed")]
    assert all(ms(c["changed_at"]) >= due for c in flips)  # never early
    assert await members(settings, redis_client, "lapsed") == {"c-fresh"}
    assert await members(settings, redis_client, "built-on") == {"c-fresh"}
    assert await members(settings, redis_client, "recent") == set()


async def test_an_edit_that_changes_the_window_reschedules(
    settings: Settings, redis_client: Redis
) -> None:
    """ "Ordered within 30 days" becomes "within 10 days": a customer whose order is 10 days
    minus 5 s old leaves 5 s after the edit's backfill, not in 20 days."""
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    await definitions.put("recent", window("within_last", 30))
    async with running_processor(settings, redis_client):
        placed = int(time.time() * 1000) - 10 * DAY + 5 * SECOND
        await produce(settings, [an_order("c-edit", placed)])

        async def is_recent() -> bool:
            return await members(settings, redis_client, "recent") == {"c-edit"}

        await wait_for(is_recent, timeout=20, what="the order applied")
        await definitions.put("recent", window("within_last", 10))
        flips = await time_flips(settings, 1)
    assert [(c["type"], c["segment_version"]) for c in flips] == [
        ("segment.member_removed", 2)]
    assert ms(flips[0]["changed_at"]) > placed + 10 * DAY
    assert await members(settings, redis_client, "recent") == set()


def _spawn(settings: Settings, log: BinaryIO) -> subprocess.Popen[bytes]:
    env = role_env(settings, SEGSTREAM_SESSION_TIMEOUT_MS="3000",
                   SEGSTREAM_API_TOKEN="test-token", SEGSTREAM_SECRET_KEY="k" * 32)
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "process"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_a_timer_due_while_its_owner_is_killed_fires_once_it_is_back(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    await create_topics(settings)
    definitions = DefinitionStore(redis_client, settings.key_prefix)
    await definitions.put("recent", window("within_last", 30))
    await definitions.put("lapsed", window("not_within_last", 30))
    with (tmp_path / "processor.log").open("ab") as log:
        process = _spawn(settings, log)
        try:
            placed = int(time.time() * 1000) - 30 * DAY + 8 * SECOND
            due = placed + 30 * DAY + 1
            await produce(settings, [an_order("c-killed", placed)])

            async def is_recent() -> bool:
                return await members(settings, redis_client, "recent") == {"c-killed"}

            await wait_for(is_recent, timeout=40, what="the order applied")
            process.send_signal(signal.SIGKILL)
            process.wait()
            await asyncio.sleep(max(0.0, (due + 2 * SECOND) / 1000 - time.time()))  # due while
            # nobody owns the partition
            assert await members(settings, redis_client, "lapsed") == set()
            process = _spawn(settings, log)
            flips = await time_flips(settings, 2, timeout=60)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert sorted((c["segment_id"], c["type"]) for c in flips) == [
        ("lapsed", "segment.member_added"), ("recent", "segment.member_removed")]
    assert all(ms(c["changed_at"]) >= due + 2 * SECOND for c in flips)  # late, not lost
    assert await members(settings, redis_client, "lapsed") == {"c-killed"}
