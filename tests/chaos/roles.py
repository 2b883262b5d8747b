"""The roles under test, `segstream process` and `segstream sync`, as subprocesses in slots.

A slot (`process-1`, `sync-2`, ...) is one role instance whose log collects all its runs, each
after a marker line. The chaos kills a slot's process and starts it again (`kill`, `start`) or
stops it with SIGTERM (`stop`); a process that ends when nobody killed or stopped it is a
finding (`RoleExit`, with its log tail), and is not started again: hiding it behind a restart
would hide the bug.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.settings import Settings
from tests.chaos.processes import log_tail, send, spawn
from tests.chaos.services import free_port

STOP_TIMEOUT_S: Final = 30.0
MARKER: Final = "=== chaos:"


@dataclass(frozen=True)
class RoleExit:
    """A role process that ended by itself, or did not stop cleanly when asked to."""

    slot: str
    pid: int
    what: str
    log_tail: str

    def describe(self) -> str:
        return f"{self.slot} (pid {self.pid}) {self.what}; its log ends:\n{self.log_tail}"


@dataclass
class Slot:
    name: str
    command: str  # "process" or "sync"
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    expected_end: bool = False
    """Killed or stopped on purpose: its end is no finding."""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def current_log(self) -> str:
        """The log of its current run (after the last marker)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[text.rfind(MARKER):] if MARKER in text else text


def role_environment(settings: Settings, run_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """What makes a `segstream` role use these settings (inherited SEGSTREAM_ variables
    dropped, so the caller's environment cannot change the run)."""
    assert settings.kafka_bootstrap and settings.redis_url and settings.secret_key
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    return inherited | {
        "SEGSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "SEGSTREAM_REDIS_URL": settings.redis_url,
        "SEGSTREAM_REDIS_CLUSTER": "true" if settings.redis_cluster else "false",
        "SEGSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "SEGSTREAM_KEY_PREFIX": settings.key_prefix,
        "SEGSTREAM_GROUP_ID": settings.group_id,
        "SEGSTREAM_PARTITIONS": str(settings.partitions),
        "SEGSTREAM_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "SEGSTREAM_API_TOKEN": "chaos-token",
        "SEGSTREAM_SECRET_KEY": settings.secret_key.get_secret_value(),
        "SEGSTREAM_RUN_DIR": str(run_dir),
        **extra,
    }


@dataclass
class Roles:
    """Every slot of the run, and the findings about them."""

    workdir: Path
    settings: Settings
    extra_env: Mapping[str, str] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    exits: list[RoleExit] = field(default_factory=list)

    def add(self, name: str, command: str) -> Slot:
        slot = Slot(name, command, self.workdir / f"{name}.log", role_environment(
            self.settings, self.workdir / "run" / name, self.extra_env))
        # each role serves health and metrics: a port of its own, kept across its restarts
        slot.env["SEGSTREAM_HTTP_PORT"] = str(free_port())
        self.slots[name] = slot
        return slot

    def start(self, slot: Slot) -> None:
        slot.runs += 1
        with slot.log_path.open("a") as log:
            log.write(f"{MARKER} run {slot.runs} of {slot.name} starts at {time.time():.3f}\n")
        slot.expected_end = False
        slot.process = spawn([sys.executable, "-m", "streams.cli", slot.command],
                             slot.log_path, cwd=self.workdir, env=slot.env)

    def running(self, command: str, names: list[str] | None = None) -> list[Slot]:
        return [s for s in self.slots.values() if s.command == command and s.alive
                and not s.expected_end and (names is None or s.name in names)]

    def kill(self, slot: Slot) -> int:
        """`kill -9` the slot's process; its pid."""
        assert slot.process is not None
        slot.expected_end = True
        send(slot.process.pid, signal.SIGKILL)
        slot.process.wait()
        return slot.process.pid

    async def stop(self, slot: Slot, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, as an orchestrator scales in: it must end, with status 0, within `timeout`."""
        process = slot.process
        if process is None or process.poll() is not None:
            return
        slot.expected_end = True
        send(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            send(process.pid, signal.SIGKILL)
            process.wait()
            self._finding(slot, f"did not stop within {timeout:g} s of SIGTERM (killed)")
        elif process.returncode != 0:
            self._finding(slot, f"exited with status {process.returncode} on SIGTERM")

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(s) for s in self.slots.values()))

    def kill_all(self) -> None:
        """On the way out after an error: nothing is left running."""
        for slot in self.slots.values():
            if slot.alive:
                self.kill(slot)

    def check(self) -> None:
        """Record every process that ended without being killed or stopped."""
        for slot in self.slots.values():
            process = slot.process
            if process is None or slot.expected_end or process.poll() is None:
                continue
            slot.expected_end = True  # reported once; not started again
            self._finding(slot, f"exited by itself with status {process.returncode}")

    async def watch(self, interval: float = 0.5) -> None:
        """`check` until cancelled."""
        while True:
            self.check()
            await asyncio.sleep(interval)

    async def wait_assigned(self, slots: list[Slot], timeout: float) -> None:
        """Until each slot's current run has been assigned partitions (maybe none)."""
        deadline = time.monotonic() + timeout
        while not all("assigned partitions" in s.current_log() for s in slots):
            self.check()
            if time.monotonic() > deadline:
                waiting = [s.name for s in slots if "assigned partitions" not in s.current_log()]
                raise TimeoutError(f"roles {waiting} were not assigned partitions within "
                                   f"{timeout:g} s (logs in {self.workdir})")
            await asyncio.sleep(0.2)

    def tracebacks(self) -> dict[str, int]:
        """Tracebacks in each slot's log (a role riding through an outage logs none)."""
        found = {s.name: s.log_path.read_text(errors="replace").count("Traceback")
                 for s in self.slots.values() if s.log_path.exists()}
        return {name: n for name, n in found.items() if n}

    def _finding(self, slot: Slot, what: str) -> None:
        assert slot.process is not None
        self.exits.append(RoleExit(slot.name, slot.process.pid, what, log_tail(slot.log_path)))
