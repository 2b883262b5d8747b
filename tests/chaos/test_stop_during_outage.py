"""A role asked to stop (SIGTERM) while Redis is away: found by the long chaos run.

`benchmarks/chaos.py --seed 1` (100k events): a processor that had joined was sent SIGTERM
while Redis was being killed and frozen back to back and the broker was frozen; it had not
exited 30 s later (an orchestrator's usual grace period before SIGKILL). Every other check of
that run held. Reduced here: a processor that owns its partitions, Redis frozen, SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from tests.chaos.processes import send
from tests.chaos.roles import Roles
from tests.chaos.services import AofValkey

STOP_WITHIN_S = 10.0


@pytest.fixture
async def own_services(tmp_path: Path) -> AsyncIterator[tuple[Settings, AofValkey]]:
    """A broker and a valkey of this test alone: the valkey is frozen."""
    broker = EmbeddedServices(tmp_path / "broker", redis=False)
    await broker.astart()
    valkey = AofValkey(tmp_path / "valkey")
    try:
        await valkey.start()
        unique = f"stop{uuid.uuid4().hex[:6]}"
        settings = Settings(
            kafka_bootstrap=broker.kafka_bootstrap, redis_url=valkey.url,
            topic_prefix=f"{unique}.", key_prefix=unique, group_id=f"{unique}-processor",
            partitions=2, session_timeout_ms=4000, secret_key=SecretStr("s" * 40),
            run_dir=tmp_path / "run")
        assert settings.kafka_bootstrap
        await ensure_topics(settings.kafka_bootstrap, TopicNames(settings.topic_prefix), 2, 1)
        yield settings, valkey
    finally:
        valkey.stop()
        await broker.astop()


@pytest.mark.slow
async def test_a_processor_asked_to_stop_while_redis_is_frozen_exits_without_waiting_for_it(
        own_services: tuple[Settings, AofValkey], tmp_path: Path) -> None:
    settings, valkey = own_services
    roles = Roles(tmp_path, settings, {"SEGSTREAM_API_TOKEN": "stop-token"})
    slot = roles.add("process-1", "process")
    roles.start(slot)
    try:
        await roles.wait_assigned([slot], timeout=60)
        assert slot.process is not None
        send(valkey.pid, signal.SIGSTOP)
        await asyncio.sleep(1.0)
        send(slot.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WITHIN_S
        while slot.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        exited = slot.process.poll()
    finally:
        send(valkey.pid, signal.SIGCONT)
        roles.kill_all()
    assert exited == 0, (f"still running {STOP_WITHIN_S:g} s after SIGTERM with Redis frozen "
                         f"(log {slot.log_path})")
