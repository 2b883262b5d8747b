"""Exactly-once under `kill -9`: the processor dies repeatedly while thousands of events flow.

After the input stops, every customer's `order_count` must equal the distinct orders sent, the
membership in Redis must equal a full recomputation from all events, and the membership topic
(deduplicated by `event_id`) must end in the same state for every customer and segment.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytest
from redis.asyncio import Redis

from segments.definitions import parse_definition
from segments.evaluator import SegmentIndex, recompute
from segments.events import decode_event
from streams.broker.topics import TopicNames
from streams.local.traffic import Storefront
from streams.settings import Settings
from tests.streams.helpers import (
    changes,
    create_topics,
    define,
    members,
    produce,
    read_topic,
    role_env,
    state_of,
    wait_for,
)

SEGMENTS = {
    "spent-200": {"name": "Spent 200+", "groups": [{"conditions": [
        {"field": "total_spent", "op": "gte", "value": 200}]}]},
    "espresso-us": {"name": "Espresso buyers in the US", "groups": [{"conditions": [
        {"field": "products_purchased", "op": "includes_any", "value": ["p-espresso"]},
        {"field": "billing_country", "op": "eq", "value": "US"}]}]},
    "refunded": {"name": "Refunded", "groups": [{"conditions": [
        {"field": "refund_count", "op": "gte", "value": 1}]}]},
}


def _spawn(settings: Settings, log: BinaryIO) -> subprocess.Popen[bytes]:
    # small batches, and commit groups of up to five of them: kills land inside open groups
    env = role_env(settings, SEGSTREAM_BATCH_MAX="300", SEGSTREAM_SESSION_TIMEOUT_MS="4000",
                   SEGSTREAM_COMMIT_GROUP_FROM="20", SEGSTREAM_COMMIT_GROUP_MAX="1500",
                   SEGSTREAM_API_TOKEN="test-token", SEGSTREAM_SECRET_KEY="k" * 32)
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "process"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
async def test_kill_9_repeatedly_loses_and_double_counts_nothing(
    settings: Settings, redis_client: Redis, tmp_path: Path
):
    await create_topics(settings)
    for segment_id, body in SEGMENTS.items():
        await define(settings, redis_client, segment_id, body)
    shop = Storefront(seed=42, customers=150)
    events = list(shop.events(3000))
    rng = random.Random(1)
    resent = rng.sample(events, 200)  # producers retry: the same event_id arrives twice
    stream = events + resent
    log_path = tmp_path / "processor.log"
    with log_path.open("ab") as log:
        procs = [_spawn(settings, log)]
        killer = asyncio.create_task(_kill_repeatedly(settings, log, log_path, procs, rng, times=3))
        try:
            for chunk_start in range(0, len(stream), 50):  # a steady flow, ~35 s in all
                await produce(settings, stream[chunk_start:chunk_start + 50])
                await asyncio.sleep(rng.uniform(0.4, 0.7))
            await killer
            expected_orders = _distinct_orders(events)
            await wait_for(
                lambda: _all_orders_applied(settings, redis_client, expected_orders),
                timeout=120, what=f"all orders applied (log: {log_path})",
            )
        finally:
            killer.cancel()
            procs[-1].send_signal(signal.SIGTERM)
            procs[-1].wait(timeout=30)
    assert log_path.read_text().count("assigned partitions") >= 4, "every restart took over"

    index = SegmentIndex(
        parse_definition(b, segment_id=i, version=1, slot=n)
        for n, (i, b) in enumerate(SEGMENTS.items())
    )
    by_customer: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_customer[e["customer_id"]].append(decode_event(orjson.dumps(e)))
    expected_members: dict[str, set[str]] = {s: set() for s in SEGMENTS}
    for customer_id, evs in by_customer.items():
        mask = _per_topic_recompute(evs, index)
        for segment_id, definition in index.by_id.items():
            if mask >> definition.slot & 1:
                expected_members[segment_id].add(customer_id)
    for segment_id, expected in expected_members.items():
        assert await members(settings, redis_client, segment_id) == expected, segment_id

    topic = TopicNames(settings.topic_prefix).membership
    seen: dict[str, dict[str, Any]] = {}
    for c in changes(await read_topic(settings, topic, 1)):
        seen.setdefault(c["event_id"], c)  # a change may arrive twice, with the same id
    final: dict[tuple[str, str], bool] = {}
    for c in seen.values():
        if c["type"] != "segment.member_updated":  # outside the added/removed alternation
            final[(c["segment_id"], c["customer_id"])] = c["type"] == "segment.member_added"
    from_topic = {s: {cid for (seg, cid), inside in final.items() if seg == s and inside}
                  for s in SEGMENTS}
    assert from_topic == expected_members


async def _kill_repeatedly(
    settings: Settings, log: BinaryIO, log_path: Path, procs: list[subprocess.Popen[bytes]],
    rng: random.Random, times: int,
) -> None:
    """SIGKILL the running processor at random moments while events flow, and restart it."""
    for n in range(1, times + 1):
        while log_path.read_text().count("assigned partitions") < n:  # let it take over first
            await asyncio.sleep(0.1)
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        procs[-1].send_signal(signal.SIGKILL)
        procs[-1].wait()
        procs.append(_spawn(settings, log))


def _per_topic_recompute(evs: list[Any], index: SegmentIndex) -> int:
    """Full recomputation; no segment here depends on the order across the two topics."""
    now_ms = int(time.time() * 1000)
    return int(recompute(evs, now_ms, index).segments_mask)


def _distinct_orders(events: list[dict[str, Any]]) -> dict[str, int]:
    orders: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["type"] == "order.placed":
            orders[e["customer_id"]].add(e["data"]["order_id"])
    return {c: len(o) for c, o in orders.items()}


async def _all_orders_applied(settings: Settings, redis: Redis, expected: dict[str, int]) -> bool:
    for customer_id, count in expected.items():
        state = await state_of(settings, redis, customer_id)
        if state is None or state.order_count != count:
            return False
    return True
