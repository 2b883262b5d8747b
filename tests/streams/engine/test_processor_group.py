"""Several `segstream process` in one group: partitions spread, move when one dies or joins, and
nothing is lost or applied twice, also while definitions change during a rebalance."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from segments.definitions import parse_definition
from segments.evaluator import SegmentIndex
from segments.events import decode_event
from streams.local.traffic import Storefront
from streams.settings import Settings
from tests.streams.engine.test_crash_recovery import (
    SEGMENTS,
    _all_orders_applied,
    _distinct_orders,
    _per_topic_recompute,
)
from tests.streams.helpers import create_topics, define, members, produce, role_env, wait_for

_ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")
EDITED = {"name": "Spent 150+", "groups": [{"conditions": [
    {"field": "total_spent", "op": "gte", "value": 150}]}]}


class Member:
    """One `segstream process` of the group, with its own log."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        env = role_env(settings, SEGSTREAM_SESSION_TIMEOUT_MS="4000",
                       SEGSTREAM_API_TOKEN="group-token", SEGSTREAM_SECRET_KEY="k" * 32)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "process"], env=env, stdout=log,
                stderr=subprocess.STDOUT)

    def owned(self) -> set[int]:
        """The partitions of its latest assignment (none before its first, or once revoked
        and not reassigned: a revocation is logged too)."""
        text = self.log_path.read_text() if self.log_path.exists() else ""
        events = [(m.start(), {int(p) for p in m.group(1).split(",") if p.strip()})
                  for m in _ASSIGNED.finditer(text)]
        return events[-1][1] if events else set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spread(group: list[Member], partitions: int) -> bool:
    owned = [m.owned() for m in group]
    union: set[int] = set().union(*owned)
    disjoint = sum(len(o) for o in owned) == len(union)
    return union == set(range(partitions)) and disjoint and all(owned)


@pytest.mark.slow
async def test_three_processors_share_partitions_through_a_kill_a_join_and_an_edit(
    settings: Settings, redis_client: Redis, tmp_path: Path
) -> None:
    settings = settings.with_changes(partitions=6)
    await create_topics(settings)
    for segment_id, body in SEGMENTS.items():
        await define(settings, redis_client, segment_id, body)
    events = list(Storefront(seed=7, customers=200).events(2400))
    group = [Member(settings, tmp_path / f"p{n}.log") for n in range(3)]
    try:
        await _until(lambda: _spread(group, 6), "three processors sharing six partitions")
        await produce(settings, events[:800])
        victim = group.pop(0)
        victim.process.send_signal(signal.SIGKILL)  # mid-stream, its batches uncommitted
        victim.process.wait()
        await produce(settings, events[800:1600])
        await _until(lambda: _spread(group, 6), "the survivors taking the dead one's partitions")
        group.append(Member(settings, tmp_path / "p3.log"))
        await define(settings, redis_client, "spent-200", EDITED)  # while they rebalance
        await produce(settings, events[1600:])
        await _until(lambda: _spread(group, 6), "the new processor taking partitions back")
        expected_orders = _distinct_orders(events)
        await wait_for(lambda: _all_orders_applied(settings, redis_client, expected_orders),
                       timeout=120, what="every order applied exactly once")
        await _backfilled(settings, redis_client)
    finally:
        for member in group:
            member.stop()
    index = SegmentIndex(parse_definition(EDITED if segment_id == "spent-200" else body,
                                          segment_id=segment_id, version=1, slot=n)
                         for n, (segment_id, body) in enumerate(SEGMENTS.items()))
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_customer[e["customer_id"]].append(decode_event(orjson.dumps(e)))
    for segment_id, definition in index.by_id.items():
        expected = {c for c, evs in by_customer.items()
                    if _per_topic_recompute(evs, index) >> definition.slot & 1}
        assert await members(settings, redis_client, segment_id) == expected, segment_id


async def _until(check: Any, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _backfilled(settings: Settings, redis: Redis) -> None:
    """Every partition reached the edited definition (`spent-200@2`)."""
    from streams.storage.state import StateStore

    store = StateStore(redis, settings.key_prefix)

    async def done() -> bool:
        return all("spent-200@2" in p for p in await store.backfilled(settings.partitions))

    await wait_for(done, timeout=60, what="the edit's backfill on every partition")
