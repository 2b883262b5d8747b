"""Three `segstream sync` processes in one consumer group while membership changes flow; one
is SIGKILLed mid-batch. After the rebalance the provider holds exactly the segment's members,
each under its newest email, and nobody who unsubscribed there was subscribed again."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from redis.asyncio import Redis

from streams.broker.topics import TopicNames, committed_offsets, high_watermarks
from streams.settings import Settings
from tests.providers.harness import Harness
from tests.streams.helpers import wait_for
from tests.streams.sync.test_email_changes import updated
from tests.streams.sync.test_worker import (
    all_committed,
    change,
    send,
    setup_target,
    sync_settings,  # noqa: F401  (fixture)
)
from tests.streams.sync.test_worker_kill import _spawn

SEGMENT = "seg-vip"


class Story:
    """Customers joining, leaving and changing email, as the processor writes it: added and
    removed alternate, an update only for a member (an email changed outside the segment
    shows in the next add); some start as prospects without an email."""

    def __init__(self, customers: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.member = {f"g{i}": False for i in range(customers)}
        self.email: dict[str, str | None] = {
            c: None if i % 10 == 0 else f"{c}-0@shop.test" for i, c in enumerate(self.member)}
        self._versions = dict.fromkeys(self.member, 0)

    def wave(self, size: int) -> list[dict[str, Any]]:
        return [self._next(c) for c in self.rng.sample(sorted(self.member), size)]

    def _next(self, customer: str) -> dict[str, Any]:
        roll = self.rng.random()
        if not self.member[customer]:
            if roll < 0.2:
                self.email[customer] = self._new_email(customer)  # changed while outside
            self.member[customer] = True
            return change(SEGMENT, customer, True, email=self.email[customer])
        if roll < 0.5:
            old, self.email[customer] = self.email[customer], self._new_email(customer)
            return updated(SEGMENT, customer, old, str(self.email[customer]))
        self.member[customer] = False
        return change(SEGMENT, customer, False, email=self.email[customer])

    def _new_email(self, customer: str) -> str:
        self._versions[customer] += 1
        return f"{customer}-{self._versions[customer]}@shop.test"

    def at_provider(self) -> set[str]:
        """What the segment or tag must hold: every member's newest email."""
        return {str(e).lower() for c, e in self.email.items() if self.member[c] and e}


def _assigned(log: Path) -> list[int] | None:
    """The partitions a worker was last assigned, from its log."""
    found = re.findall(r"sync: assigned partitions \[([0-9,\s]*)\]", log.read_text())
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else None


async def test_three_workers_one_killed_mid_batch_deliver_exactly_the_membership(
    sync_settings: Settings, redis_client: Redis, mailchimp: Harness, tmp_path: Path  # noqa: F811
) -> None:
    list_id, tag = await setup_target(sync_settings, redis_client, mailchimp, "VIP")
    assert tag is not None
    mailchimp.seed_member(list_id, "unsub@shop.test", subscribed=False)
    story = Story(customers=300, seed=11)
    await send(sync_settings, [change(SEGMENT, "unsub", True, email="unsub@shop.test"),
                               *story.wave(200)])
    logs = [tmp_path / f"sync-{n}.log" for n in range(3)]
    workers = [_spawn(sync_settings, log) for log in logs]
    try:
        async def balanced() -> bool:
            owned = [_assigned(log) if log.exists() else None for log in logs]
            shared = sorted(p for partitions in owned for p in partitions or [])
            return all(owned) and shared == list(range(sync_settings.partitions))

        await wait_for(balanced, timeout=60, what=f"three workers sharing the partitions {logs}")
        mailchimp.fake.faults.latency = 0.05  # calls in flight when the kill lands
        for _ in range(3):
            await send(sync_settings, story.wave(120))
            await asyncio.sleep(0.3)
        victim = workers[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert await _behind(sync_settings, _assigned(logs[0]) or []), (
            "killed with changes of its partitions still to do")
        for _ in range(3):  # changes keep flowing through the rebalance
            await send(sync_settings, story.wave(120))
            await asyncio.sleep(0.3)
        mailchimp.fake.faults.latency = 0.0
        await wait_for(lambda: all_committed(sync_settings), timeout=120,
                       what=f"offsets committed (logs: {logs[1:]})")
    finally:
        for worker in workers:
            _stop(worker)
    assert any("assigned partitions" in log.read_text() for log in logs[1:])
    assert mailchimp.fake.state.segment_emails(list_id, tag) == story.at_provider() | {
        "unsub@shop.test"}
    assert not mailchimp.subscribed(list_id, "unsub@shop.test")
    assert mailchimp.resubscribes() == 0


async def _behind(settings: Settings, partitions: list[int]) -> bool:
    """Whether the sync group has changes of these partitions not committed."""
    assert settings.kafka_bootstrap
    topic = TopicNames(settings.topic_prefix).membership
    tps = [TopicPartition(topic, p) for p in partitions]
    ends = await high_watermarks(settings.kafka_bootstrap, tps)
    done = await committed_offsets(settings.kafka_bootstrap, f"{settings.group_id}-sync", tps)
    return any((done[tp] or 0) < ends[tp] for tp in tps)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
