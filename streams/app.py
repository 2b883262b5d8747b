"""Composition root: wires settings, services, processor and HTTP server into the CLI's roles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from cryptography.fernet import Fernet
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from providers.limits import ProviderLimits
from streams.api import ApiDeps, create_app
from streams.broker.topics import TopicNames, ensure_topics
from streams.engine.processor import Processor
from streams.local.embedded import resolve_services
from streams.ops.http import HealthChecks, MetricsSource, serve
from streams.ops.lag import consumer_lag, groups_and_topics, prometheus_lag
from streams.ops.outages import Outages
from streams.ops.supervision import supervise, wait_for_services
from streams.settings import Settings
from streams.storage.client import brief_retry, patient_retry, redis_client
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
    processor: bool = True
    sync: bool = True


def services_file(settings: Settings) -> Path:
    return settings.run_dir / "services.json"


def discover_running(settings: Settings) -> Settings:
    """Point unset service addresses at a running `segstream up` on this machine, if any."""
    if settings.kafka_bootstrap and settings.redis_url:
        return settings
    path = services_file(settings)
    try:
        found = json.loads(path.read_text())
        os.kill(int(found["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return settings
    return settings.with_changes(
        kafka_bootstrap=settings.kafka_bootstrap or found["kafka_bootstrap"],
        redis_url=settings.redis_url or found["redis_url"],
    )


def fill_generated_secrets(settings: Settings, say: Callable[[str], None]) -> Settings:
    """`up` runs without configuration: generate the API token and encryption key it lacks."""
    if settings.api_token is None:
        token = secrets.token_urlsafe(24)
        settings = settings.with_changes(api_token=SecretStr(token))
        say(f"API token (generated for this run): {token}")
    if settings.secret_key is None:
        settings = settings.with_changes(secret_key=SecretStr(Fernet.generate_key().decode()))
    return settings


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
        say(f"Kafka: {ready.kafka_bootstrap}   Redis: {ready.redis_url}")
        url, cluster = ready.redis_url, ready.redis_cluster
        async with redis_client(url, cluster=cluster, **patient_retry(outages)) as redis, \
                redis_client(url, cluster=cluster, **brief_retry(outages)) as quick:
            checks = HealthChecks(ready.kafka_bootstrap, quick, outages)
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
    """Let `segstream produce` / `lag` on this machine find the services of this run."""
    path = services_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "pid": os.getpid(), "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url, "http_port": settings.http_port,
    }))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


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
    limits = ProviderLimits()  # one per process: the API's list syncs and the worker share it
    outages = checks.outages
    async with contextlib.AsyncExitStack() as stack:
        if options.http:
            app = await stack.enter_async_context(
                api_app(settings, quick, checks, _metrics(settings, processor, sync_counters),
                        limits))
            await stack.enter_async_context(serve(app, settings.http_host, settings.http_port))
            say(f"HTTP: http://{settings.http_host}:{settings.http_port} "
                "(API, /health/ready, /metrics, /openapi.json)")
        if options.processor:
            tasks.append(asyncio.create_task(supervise(
                "the processor", processor.run, checks.check, outages, stop), name="processor"))
        if options.sync:
            async def sync_role() -> None:
                await run_sync(settings, redis, stop, limits=limits, counters=sync_counters)

            tasks.append(asyncio.create_task(supervise(
                "the sync worker", sync_role, checks.check, outages, stop), name="sync"))
        roles_stopped = asyncio.Event()
        extras = [] if extra is None else [asyncio.create_task(
            extra(settings, redis, processor, stop, roles_stopped), name="extra")]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks, *extras], return_when=asyncio.FIRST_COMPLETED)
        processor.stop()
        stop.set()
        # The roles stop first: the sync worker may still be delivering to the demo's fake
        # provider, which the extra serves until it is told the roles are done.
        await asyncio.gather(*tasks, return_exceptions=True)
        roles_stopped.set()
        await asyncio.gather(*extras, return_exceptions=True)
        waiter.cancel()
        for task in (*tasks, *extras):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def api_app(
    settings: Settings, redis: Redis, checks: HealthChecks, metrics: MetricsSource | None,
    limits: ProviderLimits | None = None,
) -> AsyncIterator[FastAPI]:
    """The HTTP API with its own producer (for POST /events), started and stopped here."""
    assert settings.kafka_bootstrap
    if settings.secret_key is None:
        raise ValueError("SEGSTREAM_SECRET_KEY must be set: it encrypts provider credentials")
    partitions = await ensure_topics(settings.kafka_bootstrap, TopicNames(settings.topic_prefix),
                                     settings.partitions, settings.replication_factor)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
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
    settings: Settings, processor: Processor, sync: SyncCounters
) -> Callable[[], Coroutine[Any, Any, str]]:
    async def render() -> str:
        assert settings.kafka_bootstrap
        groups = groups_and_topics(TopicNames(settings.topic_prefix), settings.group_id)
        text = prometheus_lag(await consumer_lag(settings.kafka_bootstrap, groups))
        engine, checkpoint = processor.engine, processor.checkpoint
        if engine is not None and checkpoint is not None:
            counters = {**vars(engine.stats), "commits": checkpoint.commits}
            for name, value in counters.items():
                text += f"# TYPE segstream_{name}_total counter\nsegstream_{name}_total {value}\n"
        for name, value in sync.as_dict().items():
            text += f"# TYPE segstream_sync_{name}_total counter\n"
            text += f"segstream_sync_{name}_total {value}\n"
        return text

    return render
