"""The faults of a chaos run: what kinds, how many, at seeded random moments, and what each did.

Every fault heals by itself or is undone by the runner (a killed role is started again, a frozen
service continued, a killed Redis started from its append-only file, the provider's fault
knobs reset); the roles are never helped otherwise. Faults of one service never overlap (a
Redis is not frozen while it is down); kills and faults of different services may.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from providers.fakes.mailchimp import FakeMember, MailchimpFake
from tests.chaos.processes import send
from tests.chaos.roles import Roles, Slot
from tests.chaos.services import AofValkey

log = logging.getLogger("chaos.faults")

KINDS: Final = {
    "kill_processor": "kill -9 of a processor",
    "kill_sync": "kill -9 of a sync worker",
    "join_leave": "processor joined, left later",
    "freeze_broker": "broker frozen (SIGSTOP)",
    "kill_redis": "Redis killed, restarted from AOF",
    "freeze_redis": "Redis frozen (SIGSTOP)",
    "provider_errors": "provider answering 429/5xx",
    "provider_stall": "provider stalling",
    "unsubscribe": "members unsubscribed at provider",
}
SERVICE_OF: Final = {"freeze_broker": "broker", "kill_redis": "redis", "freeze_redis": "redis",
                     "provider_errors": "provider", "provider_stall": "provider"}
UNSUBSCRIBED_EACH: Final = 3
VICTIM_WAIT_S: Final = 30.0


@dataclass(frozen=True)
class FaultPlan:
    """How many faults of each kind, and how long the lasting ones last (seconds)."""

    counts: Mapping[str, int]
    broker_freeze: tuple[float, float] = (3.0, 5.0)
    redis_down: tuple[float, float] = (1.0, 4.0)
    redis_freeze: tuple[float, float] = (2.0, 6.0)
    provider_fault: tuple[float, float] = (4.0, 10.0)
    provider_latency: tuple[float, float] = (3.0, 20.0)
    joined_for: tuple[float, float] = (6.0, 15.0)
    restart_after: tuple[float, float] = (0.2, 3.0)
    """A killed role is started again this long after the kill."""

    def schedule(self, rng: random.Random, duration: float) -> list[tuple[float, str]]:
        """(seconds after the input starts, kind), in order, over most of `duration`."""
        kinds = [kind for kind, n in self.counts.items() for _ in range(n)]
        rng.shuffle(kinds)
        moments = sorted(rng.uniform(0.05, 0.85) * duration for _ in kinds)
        return list(zip(moments, kinds, strict=True))


@dataclass(frozen=True)
class Injected:
    kind: str
    at: float
    detail: str


@dataclass
class Chaos:
    """Injects a plan's faults into the run's roles and services."""

    plan: FaultPlan
    rng: random.Random
    roles: Roles
    broker_pid: int
    redis: AofValkey | None
    provider: MailchimpFake
    provider_list: str
    provider_tag: str
    base_processors: list[str]
    injected: list[Injected] = field(default_factory=list)
    unsubscribed: list[FakeMember] = field(default_factory=list)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _started: float = 0.0
    _extras: int = 0

    def counts(self) -> Counter[str]:
        return Counter(i.kind for i in self.injected)

    async def run(self, duration: float) -> None:
        """Inject the plan over `duration` seconds from now; return once every fault healed."""
        self._started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        try:
            for at, kind in self.plan.schedule(self.rng, duration):
                await asyncio.sleep(max(0.0, self._started + at - time.monotonic()))
                tasks.append(asyncio.create_task(self._inject(kind), name=f"fault-{kind}"))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _inject(self, kind: str) -> None:
        service = SERVICE_OF.get(kind)
        if service is None:
            await self._faults()[kind]()
            return
        lock = self._locks.setdefault(service, asyncio.Lock())
        async with lock:
            await self._faults()[kind]()

    def _faults(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        return {
            "kill_processor": lambda: self._kill("process", self.base_processors),
            "kill_sync": lambda: self._kill("sync", None),
            "join_leave": self._join_leave,
            "freeze_broker": self._freeze_broker,
            "kill_redis": self._kill_redis,
            "freeze_redis": self._freeze_redis,
            "provider_errors": self._provider_errors,
            "provider_stall": self._provider_stall,
            "unsubscribe": self._unsubscribe,
        }

    def _note(self, kind: str, detail: str) -> None:
        at = time.monotonic() - self._started
        self.injected.append(Injected(kind, at, detail))
        log.info("t+%.1fs %s: %s", at, KINDS[kind], detail)

    async def _kill(self, command: str, names: list[str] | None) -> None:
        victims = await self._running(command, names)
        if not victims:
            log.warning("no running %s to kill for %g s; fault skipped", command, VICTIM_WAIT_S)
            return
        victim = self.rng.choice(victims)
        pid = self.roles.kill(victim)
        delay = self.rng.uniform(*self.plan.restart_after)
        self._note(f"kill_{'processor' if command == 'process' else 'sync'}",
                   f"{victim.name} (pid {pid}), started again after {delay:.1f} s")
        await asyncio.sleep(delay)
        self.roles.start(victim)

    async def _running(self, command: str, names: list[str] | None) -> list[Slot]:
        """The running slots to pick a victim from; when every one is down (killed a moment
        ago), wait for one to be started again, so each planned kill lands."""
        deadline = time.monotonic() + VICTIM_WAIT_S
        while not (victims := self.roles.running(command, names)):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        return victims

    async def _join_leave(self) -> None:
        self._extras += 1
        slot: Slot = self.roles.add(f"process-extra-{self._extras}", "process")
        self.roles.start(slot)
        stay = self.rng.uniform(*self.plan.joined_for)
        self._note("join_leave", f"{slot.name} joined for {stay:.1f} s")
        await asyncio.sleep(stay)
        await self.roles.stop(slot)

    async def _freeze_broker(self) -> None:
        seconds = self.rng.uniform(*self.plan.broker_freeze)
        self._note("freeze_broker", f"{seconds:.1f} s")
        await self._frozen(self.broker_pid, seconds)

    async def _kill_redis(self) -> None:
        assert self.redis is not None, "Redis faults need the run's own valkey"
        down = self.rng.uniform(*self.plan.redis_down)
        self._note("kill_redis", f"down {down:.1f} s")
        self.redis.kill()
        await asyncio.sleep(down)
        await self.redis.start()

    async def _freeze_redis(self) -> None:
        assert self.redis is not None, "Redis faults need the run's own valkey"
        seconds = self.rng.uniform(*self.plan.redis_freeze)
        self._note("freeze_redis", f"{seconds:.1f} s")
        await self._frozen(self.redis.pid, seconds)

    async def _frozen(self, pid: int, seconds: float) -> None:
        send(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            send(pid, signal.SIGCONT)

    async def _provider_errors(self) -> None:
        seconds = self.rng.uniform(*self.plan.provider_fault)
        faults = self.provider.faults
        faults.rate_429, faults.rate_5xx = self.rng.uniform(0.2, 0.5), self.rng.uniform(0.1, 0.3)
        self._note("provider_errors", f"{seconds:.1f} s, 429 on {faults.rate_429:.0%}, 5xx on "
                   f"{faults.rate_5xx:.0%} of requests")
        try:
            await asyncio.sleep(seconds)
        finally:
            faults.rate_429 = faults.rate_5xx = 0.0

    async def _provider_stall(self) -> None:
        seconds = self.rng.uniform(*self.plan.provider_fault)
        faults = self.provider.faults
        faults.latency = self.rng.uniform(*self.plan.provider_latency)
        self._note("provider_stall", f"{seconds:.1f} s, each answer {faults.latency:.1f} s late")
        try:
            await asyncio.sleep(seconds)
        finally:
            faults.latency = 0.0

    async def _unsubscribe(self) -> None:
        """People who unsubscribe at the provider (from its own emails): nobody may subscribe
        them again, whatever their segment does."""
        state = self.provider.state
        tagged = sorted(state.segment_emails(self.provider_list, self.provider_tag))
        members = [m for e in tagged if (m := state.member(self.provider_list, e)) is not None
                   and m.status == "subscribed"]
        chosen = self.rng.sample(members, min(UNSUBSCRIBED_EACH, len(members)))
        for member in chosen:
            member.status = "unsubscribed"
        self.unsubscribed.extend(chosen)
        self._note("unsubscribe", ", ".join(m.email for m in chosen) or "nobody tagged yet")
