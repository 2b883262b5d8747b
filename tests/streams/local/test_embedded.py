"""The embedded Tansu and Valkey: they come up, answer, and never outlive their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis.asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.broker.topics import cluster_id
from streams.local import embedded
from streams.local.embedded import EmbeddedServices, ServiceStartError, resolve_services
from streams.settings import Settings

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

REPO_ROOT = Path(__file__).resolve().parents[2]


def alive(pids: Iterable[int]) -> list[int]:
    """The pids still running (a zombie waiting for init to reap it is dead)."""
    running = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_until_dead(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


async def test_services_answer_and_stop(tmp_path: Path) -> None:
    async with EmbeddedServices(tmp_path) as services:
        pids = services.pids.values()
        assert len(alive(pids)) == 2
        assert await cluster_id(services.kafka_bootstrap) == services.cluster_id
        await _roundtrip_kafka(services.kafka_bootstrap)
        async with redis.asyncio.Redis.from_url(services.redis_url) as client:
            assert await client.ping()
            await client.set(b"k", b"v")
            assert await client.get(b"k") == b"v"
        assert (tmp_path / "tansu.log").exists() and (tmp_path / "valkey.log").exists()

    assert alive(pids) == []
    assert services.pids == {}
    with pytest.raises(RuntimeError, match="not running"):
        _ = services.kafka_bootstrap


def test_sync_start_and_stop_leave_no_process(tmp_path: Path) -> None:
    services = EmbeddedServices(tmp_path)
    services.start()
    try:
        pids = list(services.pids.values())
        assert len(alive(pids)) == 2
    finally:
        services.stop()
    assert alive(pids) == []
    services.stop()  # a second stop is harmless


async def test_stop_signals_reach_the_main_thread_and_the_services(tmp_path: Path) -> None:
    """The thread that forks the services blocks SIGINT and SIGTERM, so a Ctrl-C is delivered
    to a thread whose event loop it wakes; the services themselves take both."""
    async with EmbeddedServices(tmp_path) as services:
        spawner = next(t for t in threading.enumerate() if t.name == "segstream-spawner")
        assert {signal.SIGINT, signal.SIGTERM} <= _blocked(f"/proc/self/task/{spawner.native_id}")
        for pid in services.pids.values():
            assert not {signal.SIGINT, signal.SIGTERM} & _blocked(f"/proc/{pid}")


def _blocked(proc_dir: str) -> set[signal.Signals]:
    status = Path(proc_dir, "status").read_text()
    mask = int(next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1],
               16)
    return {signal.Signals(n) for n in range(1, 65) if mask >> (n - 1) & 1
            and n in signal.valid_signals()}


async def test_cluster_id_differs_between_runs(tmp_path: Path) -> None:
    async with EmbeddedServices(tmp_path / "a", redis=False) as first:
        first_id = await cluster_id(first.kafka_bootstrap)
    async with EmbeddedServices(tmp_path / "b", redis=False) as second:
        second_id = await cluster_id(second.kafka_bootstrap)
    assert first_id and second_id and first_id != second_id


async def test_only_requested_services_start(tmp_path: Path) -> None:
    async with EmbeddedServices(tmp_path, kafka=False) as services:
        assert set(services.pids) == {"valkey"}
        with pytest.raises(RuntimeError, match="tansu is not running"):
            _ = services.kafka_bootstrap


async def test_broker_environment_cannot_override_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in {
        "STORAGE_ENGINE": "postgres://nobody@127.0.0.1:1/none",
        "CLUSTER_ID": "from-the-environment",
        "LISTENER_URL": "tcp://127.0.0.1:1",
        "ADVERTISED_LISTENER_URL": "tcp://127.0.0.1:1",
    }.items():
        monkeypatch.setenv(variable, value)
    async with EmbeddedServices(tmp_path, redis=False) as services:
        assert await cluster_id(services.kafka_bootstrap) == services.cluster_id


async def test_valkey_append_only_file_keeps_data(tmp_path: Path) -> None:
    aof = tmp_path / "aof"
    for run, expected in (("one", None), ("two", b"kept")):
        services = EmbeddedServices(tmp_path / run, kafka=False, redis_aof_dir=aof)
        async with services, redis.asyncio.Redis.from_url(services.redis_url) as client:
            assert await client.get(b"k") == expected
            await client.set(b"k", b"kept")


async def test_a_service_that_exits_reports_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valkey_argv = EmbeddedServices._valkey_argv

    def broken_argv(self: EmbeddedServices, port: int) -> list[str]:
        return [*valkey_argv(self, port), "--no-such-directive", "x"]

    monkeypatch.setattr(EmbeddedServices, "_valkey_argv", broken_argv)
    services = EmbeddedServices(tmp_path)
    with pytest.raises(ServiceStartError, match=r"(?s)valkey exited.*no-such-directive"):
        await services.astart()
    assert services.pids == {}


async def test_a_service_that_never_answers_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(port: int) -> bool:
        return False

    monkeypatch.setattr(embedded, "_redis_answers", never)
    services = EmbeddedServices(tmp_path, kafka=False, startup_timeout=0.3)
    with pytest.raises(ServiceStartError, match=r"(?s)did not answer .* within 0.3 s.*valkey.log"):
        await services.astart()
    assert services.pids == {}


async def test_resolve_services_starts_only_what_is_unset(tmp_path: Path) -> None:
    configured = Settings(
        kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1", run_dir=tmp_path
    )
    async with resolve_services(configured) as resolved:
        assert resolved is configured

    async with EmbeddedServices(tmp_path / "redis", kafka=False) as redis_only:
        wanted = Settings(redis_url=redis_only.redis_url, run_dir=tmp_path / "run")
        async with resolve_services(wanted) as resolved:
            assert resolved.redis_url == redis_only.redis_url
            assert resolved.kafka_bootstrap is not None
            assert await cluster_id(resolved.kafka_bootstrap)
        assert list((tmp_path / "run").iterdir()) == [tmp_path / "run" / "tansu.log"]


CHILD = """
import asyncio, json, os, signal, sys, time
from streams.local.embedded import EmbeddedServices

# Ctrl-C as from a shell: the test process may hand down SIGINT ignored or blocked
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

mode, run_dir = sys.argv[1], sys.argv[2]

def report(services):
    print(json.dumps(services.pids), flush=True)

if mode == "async":
    async def main():
        async with EmbeddedServices(run_dir) as services:
            report(services)
            # short sleeps: a SIGINT the kernel hands to an idle executor thread runs
            # asyncio.run's handler only once the main thread's loop wakes up
            for _ in range(600):
                await asyncio.sleep(0.1)
    asyncio.run(main())
else:
    services = EmbeddedServices(run_dir)
    services.start()
    report(services)
    if mode == "exit":
        sys.exit(0)  # without stop(): atexit does it
    time.sleep(60)
"""


@pytest.mark.parametrize(
    ("mode", "signum"),
    [("sync", signal.SIGKILL), ("async", signal.SIGKILL), ("async", signal.SIGINT), ("exit", 0)],
    ids=["sigkill-sync", "sigkill-async", "ctrl-c", "exit-without-stop"],
)
def test_no_orphans_when_the_parent_goes(tmp_path: Path, mode: str, signum: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(tmp_path)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=_child_env(),
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, f"child printed nothing (exit code {child.wait()})"
        pids: dict[str, Any] = json.loads(line)
        if mode != "exit":  # that child exits right after printing: nothing to see alive
            assert len(alive(pids.values())) == 2
        if signum:
            child.send_signal(signum)
        child.wait(timeout=30)  # its stop waits up to STOP_TIMEOUT_S per service, on a busy CI
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    assert wait_until_dead(pids.values()) == [], f"orphans left after {mode}: {pids}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


async def _roundtrip_kafka(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("roundtrip", b"hello", key=b"k", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition("roundtrip", 0)])
        record = await consumer.getone()
        assert (record.key, record.value) == (b"k", b"hello")
    finally:
        await consumer.stop()
