"""The role supervisor: an outage restarts the role once the services answer; a bug ends it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from aiokafka.errors import KafkaConnectionError

from streams.ops import supervision
from streams.ops.outages import Outages
from streams.storage.state import CommitFenced


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervision, "BACKOFF_BASE_S", 0.001)
    monkeypatch.setattr(supervision, "BACKOFF_CAP_S", 0.01)


async def test_an_outage_restarts_the_role_after_the_services_answer() -> None:
    outages, stop = Outages(), asyncio.Event()
    probes: list[str] = []
    runs = 0

    async def probe() -> Mapping[str, str]:
        probes.append("probe")
        return {"kafka": "ok" if len(probes) >= 3 else "unreachable: KafkaConnectionError",
                "redis": "ok"}

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise KafkaConnectionError("broker gone")
        if runs == 2:
            raise CommitFenced([3])  # restarted at once, no probe

    await supervision.supervise("role", run, probe, outages, stop)
    assert runs == 3 and len(probes) == 3
    assert outages.counts == {"kafka": 1} and outages.reasons() == {}


async def test_a_bug_ends_the_role_with_its_error() -> None:
    async def probe() -> Mapping[str, str]:
        return {"redis": "ok"}

    async def run() -> None:
        raise ValueError("bad configuration")

    with pytest.raises(ValueError, match="bad configuration"):
        await supervision.supervise("role", run, probe, Outages(), asyncio.Event())


async def test_stop_ends_the_wait_for_services() -> None:
    stop = asyncio.Event()

    async def probe() -> Mapping[str, str]:
        stop.set()
        return {"redis": "unreachable: ConnectionError"}

    assert await supervision.wait_for_services(probe, Outages(), stop) is False
