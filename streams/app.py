"""Composition root: wires settings, services, processor and HTTP server into the CLI's roles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from providers.limits import ProviderLimits
from providers.profiles import Profile
from streams.api import ApiDeps, create_app
from streams.broker.topics import TopicNames, ensure_topics, partition_counts
from streams.engine.processor import Processor
from streams.local.embedded import EmbeddedServices, ServiceStartError, resolve_services
from streams.ops.http import (
    HealthChecks,
    MetricsSource,
    bound_port,
    build_app,
    health_routes,
    serve,
)
from streams.ops.lag import LagReader, groups_and_topics, sync_group
from streams.ops.logs import log_context
from streams.ops.metrics import Metrics
from streams.ops.outages import Outages
from streams.ops.supervision import supervise, wait_for_services
from streams.settings import Settings
from streams.storage.client import brief_retry, patient_retry, redis_client, shown_url
from streams.storage.definitions import DefinitionStore, apply_segments_file
from streams.storage.profiles import ProfileStore
from streams.storage.state import StateStore
from streams.sync.refresh import refresh_forever
from streams.sync.worker import SyncCounters, run_sync

log = logging.getLogger("segstream")

Extra = Callable[[Settings, Redis, "Processor", asyncio.Event, asyncio.Event],
                 Coroutine[Any, Any, None]]
"""Something run beside the roles (the demo): called with `stop` and `roles_stopped`. It stops
what it drives when `stop` is set, and keeps what the roles use (the demo's fake provider) until
`roles_stopped` is set."""


@dataclass(frozen=True)
class UpOptions:
    """What `segstream up` / `process` were asked to do beyond the settings."""

    segments_file: str | None = None
    demo: bool = False
    http: bool = True
    """Serve the segment API. Every role serves /health/* and /metrics on the HTTP port."""
    processor: bool = True
    sync: bool = True


def services_file(settings: Settings) -> Path:
    """Where a running `up` (or role) says which services it uses, in its run folder."""
    return settings.run_dir / "services.json"


def user_state_dir() -> Path | None:
    """The per-user folder where every running `up` also publishes its services file, so that
    `produce` and `lag` find it from any folder: ``$SEGSTREAM_STATE_DIR``, else
    ``$XDG_STATE_HOME/segstream``, else ``~/.local/state/segstream`` (None: no home)."""
    named = os.environ.get("SEGSTREAM_STATE_DIR")
    if named:
        return Path(named)
    xdg = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec ignores a relative one
        return Path(xdg) / "segstream"
    try:
        return Path.home() / ".local" / "state" / "segstream"
    except RuntimeError:  # no HOME and no password entry
        return None


def discover_running(settings: Settings) -> Settings:
    """Point unset service addresses at a running `segstream up` on this machine, if any: the
    one of this run folder, else the newest one published in the user's state folder."""
    if settings.kafka_bootstrap and settings.redis_url:
        return settings
    found = _alive(services_file(settings)) or _newest_for_user()
    if found is None:
        return settings
    redis = {} if settings.redis_url else {
        "redis_url": found["redis_url"], "redis_cluster": bool(found.get("redis_cluster"))}
    return settings.with_changes(
        kafka_bootstrap=settings.kafka_bootstrap or found["kafka_bootstrap"], **redis)


def _alive(path: Path, remove_stale: bool = False) -> dict[str, Any] | None:
    """The services file at `path` when the process that wrote it still runs."""
    try:
        found = json.loads(path.read_text())
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        if remove_stale:
            path.unlink(missing_ok=True)
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(found.get(key), str) for key in ("kafka_bootstrap", "redis_url")):
        return None
    return dict(found)


def _newest_for_user() -> dict[str, Any] | None:
    """The services of the newest running `up` of this user; stale files are removed."""
    folder = user_state_dir()
    if folder is None or not folder.is_dir():
        return None
    running: list[tuple[int, dict[str, Any]]] = []
    for path in folder.glob("services-*.json"):
        found = _alive(path, remove_stale=True)
        if found is not None:
            with contextlib.suppress(OSError):
                running.append((path.stat().st_mtime_ns, found))
    return max(running, key=lambda r: r[0])[1] if running else None


def secrets_file(settings: Settings) -> Path:
    """Where `up` keeps the API token and secret key it generated (owner-only)."""
    return settings.run_dir / "secrets.json"


_GENERATED: dict[str, Callable[[], str]] = {
    "api_token": lambda: secrets.token_urlsafe(24),
    "secret_key": lambda: Fernet.generate_key().decode(),
}


def fill_generated_secrets(settings: Settings, say: Callable[[str], None]) -> Settings:
    """`up` runs without configuration: the API token and secret key it lacks come from its run
    folder's `secrets.json`, or are generated once and kept there (mode 0600), so the profiles
    saved by one `up` are readable by the next. Set ones win and are never written."""
    lacking = [name for name in _GENERATED if getattr(settings, name) is None]
    if not lacking:
        return settings
    path = secrets_file(settings)
    kept = _read_secrets(path)
    new = {name: _GENERATED[name]() for name in lacking if name not in kept}
    if new:
        _write_private(path, {**kept, **new})
    chosen = {name: kept.get(name) or new[name] for name in lacking}
    settings = settings.with_changes(**{n: SecretStr(v) for n, v in chosen.items()})
    where = path.resolve()
    if "api_token" in chosen:
        origin = "generated for this run" if "api_token" in new else f"from {where}"
        say(f"API token ({origin}): {chosen['api_token']}")
    if "secret_key" in chosen:
        made = "generated, " if "secret_key" in new else ""
        say(f"Secret key (encrypts provider credentials): {made}kept in {where}")
    if new:
        say(f"{where} is readable by you only; the next `segstream up` in this folder uses "
            "what it holds")
    return settings


def _read_secrets(path: Path) -> dict[str, str]:
    """What `up` kept in `path` ({} when there is no file); a file others can read is made
    owner-only."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        kept = json.loads(text)
        if not isinstance(kept, dict) or not all(
                isinstance(kept.get(n, ""), str) for n in _GENERATED):
            raise ValueError("not an object of strings")
    except ValueError:
        raise ValueError(
            f"{path} is damaged (it should hold the JSON object `segstream up` wrote): repair it, "
            "or delete it to generate a new API token and secret key (provider profiles saved "
            "with the old key then cannot be read)") from None
    if mode & 0o077:
        path.chmod(0o600)
        log.warning("%s was readable by others; it is now readable by its owner only", path)
    return {name: value for name, value in kept.items() if name in _GENERATED and value}


def _write_private(path: Path, values: Mapping[str, Any]) -> None:
    """Write `values` to `path`, owner-only from the start, replacing it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        os.fchmod(descriptor, 0o600)  # the mode of O_CREAT passes through the umask
        json.dump(values, out, indent=2)
    os.replace(temporary, path)


_CHECK_TIMEOUT_S = 5.0


async def refuse_unreadable_profiles(settings: Settings, command: str) -> None:
    """Raise ValueError (exit 2) when SEGSTREAM_SECRET_KEY cannot decrypt the credentials of a
    stored provider profile, instead of starting and answering 500 `credentials_unreadable`.

    The Redis of the settings is asked with a short-lived client; when it does not answer in
    time, the check is skipped (logged), never waited for. For `up` with the embedded server,
    its append-only file in the run folder is read by a server started for the check alone.
    """
    assert settings.secret_key is not None
    key = settings.secret_key.get_secret_value()
    try:
        async with _stored_data(settings) as url:
            if url is None:
                return
            async with asyncio.timeout(_CHECK_TIMEOUT_S), redis_client(
                    url, cluster=settings.redis_cluster,
                    socket_connect_timeout=_CHECK_TIMEOUT_S) as redis:
                profiles = ProfileStore(redis, settings.key_prefix, key)
                unreadable, total = await profiles.unreadable(), len(await profiles.list())
    except (RedisError, OSError, TimeoutError, ServiceStartError) as exc:
        log.warning("could not check that SEGSTREAM_SECRET_KEY reads the stored provider "
                    "profiles (Redis did not answer: %s); starting anyway",
                    str(exc) or type(exc).__name__)
        return
    if unreadable:
        raise ValueError(_unreadable_message(settings, command, unreadable, total))


@contextlib.asynccontextmanager
async def _stored_data(settings: Settings) -> AsyncIterator[str | None]:
    """The URL of the Redis holding this run's data: the configured one, or for `up` a server
    on the embedded one's append-only file (`resolve_services` keeps it in the run folder's
    `valkey`); None when there is none yet."""
    if settings.redis_url:
        yield settings.redis_url
        return
    data = settings.run_dir / "valkey"
    if not data.is_dir():
        yield None
        return
    log.info("reading the provider profiles kept in %s, to check SEGSTREAM_SECRET_KEY", data)
    async with EmbeddedServices(settings.run_dir, kafka=False, redis=True,
                                redis_aof_dir=data) as embedded:
        yield embedded.redis_url


def _unreadable_message(
    settings: Settings, command: str, unreadable: list[Profile], total: int
) -> str:
    named = ", ".join(f"{p.name!r} (id {p.id})" for p in unreadable)
    problem = (f"`segstream {command}` refuses to start: SEGSTREAM_SECRET_KEY cannot decrypt the "
               f"credentials of {len(unreadable)} of {total} stored auto-responder profiles: "
               f"{named}. Start it with the SEGSTREAM_SECRET_KEY they were saved with")
    if settings.redis_url:
        return (f"{problem}, or delete those profiles and create them again: redis-cli -u "
                f"\"$SEGSTREAM_REDIS_URL\" HDEL {settings.key_prefix}:profiles "
                + " ".join(p.id for p in unreadable))
    return (f"{problem} (the one `segstream up` generated is kept in "
            f"{secrets_file(settings).resolve()}, used when SEGSTREAM_SECRET_KEY is unset); or, "
            f"with that key lost, delete {(settings.run_dir / 'valkey').resolve()} to start over "
            "(the Redis data of `segstream up` in this folder: profiles, segments and customer "
            "states).")


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_system(
    settings: Settings,
    options: UpOptions,
    say: Callable[[str], None],
    extra: Extra | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Start the services (embedded where unconfigured) and the roles; run until `stop`.

    Roles ride through outages of Redis and the broker (`streams.ops.supervision`): their
    Redis client waits a Redis outage out, and a role an outage stopped is run again once both
    answer. The API and the health checks use a client that gives up quickly instead.
    """
    stop = stop or asyncio.Event()
    outages = Outages()
    async with resolve_services(settings) as ready:
        assert ready.kafka_bootstrap and ready.redis_url
        say(f"Kafka: {ready.kafka_bootstrap}   Redis: {shown_url(ready.redis_url)}")
        url, cluster = ready.redis_url, ready.redis_cluster
        async with redis_client(url, cluster=cluster, **patient_retry(outages)) as redis, \
                redis_client(url, cluster=cluster, **brief_retry(outages)) as quick:
            checks = HealthChecks(ready.kafka_connection(), quick, outages)
            try:
                if not await wait_for_services(checks.check, outages, stop):
                    return
                if await DefinitionStore(redis, ready.key_prefix).migrate():
                    log.info("segment definitions moved to their hash-tagged keys")
                await _load_segments(ready, redis, options, say)
                processor = Processor(ready, redis)
                with _published(ready):
                    await _run_roles(ready, redis, quick, checks, processor, options, say,
                                     extra, stop)
            finally:
                await checks.close()


async def _load_segments(
    settings: Settings, redis: Redis, options: UpOptions, say: Callable[[str], None]
) -> None:
    if options.segments_file:
        store = DefinitionStore(redis, settings.key_prefix)
        applied = await apply_segments_file(store, options.segments_file)
        say(f"Segments from {options.segments_file}: "
            + ", ".join(f"{d.id} (v{d.version})" for d in applied))


@contextlib.contextmanager
def _published(settings: Settings) -> Iterator[None]:
    """Let `segstream produce` / `lag` run in this folder find the services of this run."""
    path = services_file(settings)
    _write_private(path, _services_of(settings))  # a Redis URL may hold a password
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def published_for_user(settings: Settings) -> Iterator[Path | None]:
    """Let `segstream produce` / `lag` run in any folder of this user find the services of
    this `up`: a file per running `up` in `user_state_dir()`, owner-only (a Redis URL may
    hold a password), removed on the way out. Best effort: yields None when it cannot be
    written (logged), and `up` runs on."""
    folder, path = user_state_dir(), None
    if folder is not None:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / f"services-{os.getpid()}.json"
            _write_private(path, _services_of(settings))
        except OSError as exc:
            log.warning("cannot publish the services of this run in %s: %s", folder, exc)
            path = None
    try:
        yield path
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def _services_of(settings: Settings) -> dict[str, Any]:
    return {
        "pid": os.getpid(), "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url, "redis_cluster": settings.redis_cluster,
        "http_port": settings.http_port, "run_dir": str(settings.run_dir.resolve()),
    }


async def _run_roles(
    settings: Settings,
    redis: Redis,
    quick: Redis,
    checks: HealthChecks,
    processor: Processor,
    options: UpOptions,
    say: Callable[[str], None],
    extra: Extra | None,
    stop: asyncio.Event,
) -> None:
    assert settings.kafka_bootstrap
    tasks: list[asyncio.Task[None]] = []
    sync_counters = SyncCounters()
    outages = checks.outages
    metrics = _metrics(settings, quick, processor, sync_counters, outages, options)
    # one per process: the API's list syncs and the worker share it
    limits = ProviderLimits(observer=metrics)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(metrics.close)
        if not options.http:  # a role alone still answers its probes and scrapes
            server = await stack.enter_async_context(serve(
                build_app(health_routes(checks, metrics.render)), settings.http_host,
                settings.http_port))
            say(f"HTTP: http://{settings.http_host}:{bound_port(server)} "
                "(/health/live, /health/ready, /metrics)")
        else:
            app = await stack.enter_async_context(
                api_app(settings, quick, checks, metrics.render, limits))
            with log_context(role="api"):  # the server task logs as the API
                await stack.enter_async_context(
                    serve(app, settings.http_host, settings.http_port))
            say(f"HTTP: http://{settings.http_host}:{settings.http_port} "
                "(API, /health/ready, /metrics, /openapi.json)")
        if options.processor:
            checks.role("processor", lambda: "ok" if processor.ready.is_set()
                        else "starting: joining the consumer group")
            with log_context(role="process"):
                tasks.append(asyncio.create_task(supervise(
                    "the processor", processor.run, checks.check, outages, stop),
                    name="processor"))
        if options.sync:
            async def sync_role() -> None:
                await run_sync(settings, redis, stop, limits=limits, counters=sync_counters,
                               observer=metrics)

            with log_context(role="sync"):
                syncing = asyncio.create_task(supervise(
                    "the sync worker", sync_role, checks.check, outages, stop), name="sync")
            tasks.append(syncing)
            checks.role("sync", lambda: "stopped" if syncing.done() else "ok")
        roles_stopped = asyncio.Event()
        extras = [] if extra is None else [asyncio.create_task(
            extra(settings, redis, processor, stop, roles_stopped), name="extra")]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks, *extras], return_when=asyncio.FIRST_COMPLETED)
        processor.stop()
        stop.set()
        # The roles stop first: the sync worker may still be delivering to the demo's fake
        # provider, which the extra serves until it is told the roles are done.
        await _stopped_within(tasks, ROLE_STOP_GRACE_S)
        roles_stopped.set()
        await asyncio.gather(*extras, return_exceptions=True)
        waiter.cancel()
        for task in (*tasks, *extras):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


ROLE_STOP_GRACE_S: Final = 5.0
"""How long roles asked to stop may take to finish what they hold (a commit, a provider call)
before they are cancelled: an orchestrator's grace period before SIGKILL is commonly 30 s."""


async def _stopped_within(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Wait for `tasks` to end, cancelling those still running after `grace` seconds.

    A role waiting out an outage (a frozen Redis) would otherwise hold the stop for as long as
    the outage lasts. Cancelling is safe for the guarantees, as a crash is: the commit is
    numbered, and whatever was not committed is replayed from the stored offsets at the next
    start, its records with the same ids.
    """
    if not tasks:
        return
    _, running = await asyncio.wait(tasks, timeout=grace)
    if running:
        log.warning("%s still running %.0f s after the stop (waiting for a service that does "
                    "not answer?); cancelling: what they did not commit is replayed at the next "
                    "start", ", ".join(sorted(t.get_name() for t in running)), grace)
        for task in running:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def api_app(
    settings: Settings, redis: Redis, checks: HealthChecks, metrics: MetricsSource | None,
    limits: ProviderLimits | None = None,
) -> AsyncIterator[FastAPI]:
    """The HTTP API with its own producer (for POST /events), started and stopped here."""
    kafka = settings.kafka_connection()
    if settings.secret_key is None:
        raise ValueError("SEGSTREAM_SECRET_KEY must be set: it encrypts provider credentials")
    partitions = await ensure_topics(kafka, TopicNames(settings.topic_prefix),
                                     settings.partitions, settings.replication_factor)
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all",
                                linger_ms=5, enable_idempotence=settings.kafka_idempotence)
    profiles = ProfileStore(redis, settings.key_prefix, settings.secret_key.get_secret_value(),
                            limits=limits)
    await producer.start()
    stop_refresh = asyncio.Event()
    refresher = asyncio.create_task(
        refresh_forever(profiles, settings.provider_refresh_s, stop_refresh), name="refresh")
    try:
        yield create_app(ApiDeps(
            settings=settings, definitions=DefinitionStore(redis, settings.key_prefix),
            states=StateStore(redis, settings.key_prefix), producer=producer, checks=checks,
            metrics=metrics, partitions=partitions, profiles=profiles,
        ))
    finally:
        stop_refresh.set()
        await refresher
        await producer.stop()


def _metrics(
    settings: Settings, redis: Redis, processor: Processor, sync: SyncCounters,
    outages: Outages, options: UpOptions,
) -> _ProcessMetrics:
    """The process's metrics: what its roles count and observe, the lag of the groups they
    run (both for the API alone, which runs none), and, with a processor, members per segment
    (read with `redis`, the quick client)."""
    metrics = _ProcessMetrics()
    metrics.watch_outages(outages)
    topics = TopicNames(settings.topic_prefix)
    groups = groups_and_topics(topics, settings.group_id)
    if options.processor:
        processor.observer = metrics
        metrics.watch_engine(processor.stats)
        metrics.watch_members(_member_counts(settings, redis))
    if options.sync:
        metrics.watch_sync(sync)
    mine = {settings.group_id: options.processor, sync_group(settings.group_id): options.sync}
    if any(mine.values()):
        groups = [(group, topics) for group, topics in groups if mine[group]]
    metrics.reader = LagReader(settings.kafka_connection(), groups)
    metrics.watch_lag(metrics.reader)
    return metrics


class _ProcessMetrics(Metrics):
    """`Metrics` with the lag reader it closes when the roles stop."""

    reader: LagReader | None = None

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()


def _member_counts(settings: Settings, redis: Redis) -> Callable[[], Coroutine[Any, Any,
                                                                                 dict[str, int]]]:
    definitions = DefinitionStore(redis, settings.key_prefix)
    states = StateStore(redis, settings.key_prefix)
    partitions: list[int] = []

    async def counts() -> dict[str, int]:
        if not partitions:
            customers = TopicNames(settings.topic_prefix).customers
            found = await partition_counts(settings.kafka_connection(), [customers])
            partitions.append(found.get(customers, settings.partitions))
        live = (await definitions.load()).live
        return await states.member_counts(partitions[0], sorted(live))

    return counts
