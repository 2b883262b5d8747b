"""A role's `/metrics` and `/health/*` as an operator sees them, with events flowing.

The roles run in this process (`run_system` as `segstream process` and `segstream sync` run
them, HTTP on a port of their own) against the session's broker and Redis; they are scraped
over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis

from streams.app import UpOptions, run_system
from streams.settings import Settings
from tests.streams.helpers import BIG_SPENDERS, create_topics, define, order, produce, wait_for
from tests.streams.ops.scrape import free_port, has_sample, scrape, value


def process_role(settings: Settings) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """`segstream process` in this process; an HTTP client on its port, once it is ready."""
    return role(settings, UpOptions(http=False, sync=False))


@contextlib.asynccontextmanager
async def role(settings: Settings, options: UpOptions) -> AsyncIterator[httpx.AsyncClient]:
    """The roles of `options` in this process; an HTTP client on their port, once ready."""
    port = free_port()
    settings = settings.with_changes(http_port=port)
    stop = asyncio.Event()
    running = asyncio.create_task(run_system(settings, options, lambda _: None, None, stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await wait_for(lambda: _ready(http, running), timeout=60, what="the role ready")
            yield http
    finally:
        stop.set()
        await running


async def _ready(http: httpx.AsyncClient, role: asyncio.Task[None]) -> bool:
    if role.done():
        role.result()
    with contextlib.suppress(httpx.HTTPError):
        return (await http.get("/health/ready")).status_code == 200
    return False


async def test_a_process_role_counts_events_changes_dead_letters_and_lag(
    settings: Settings, redis_client: Redis
) -> None:
    await create_topics(settings)
    await define(settings, redis_client, "big", BIG_SPENDERS)
    customers = [f"c-{n}" for n in range(20)]
    async with process_role(settings) as http:
        ready = (await http.get("/health/ready")).json()
        assert ready["checks"]["processor"] == "ok", ready
        before = await scrape(http)
        assert value(before, "segstream_events_applied_total") == 0
        for name in ("segstream_batch_processing_seconds_bucket", "segstream_service_up",
                     "process_cpu_seconds_total"):
            assert has_sample(before, name), name

        orders = [order(c, 1, "150") for c in customers]
        orders_topic = f"{settings.topic_prefix}orders"
        await produce(settings, [*orders, orders[0], ("orders", b"{not json")])

        async def all_counted() -> bool:
            text = await scrape(http)
            return (value(text, "segstream_events_applied_total", type="order.placed") == 20
                    and value(text, "segstream_dead_letters_total") == 1
                    and has_sample(text, "segstream_consumer_lag_records", topic=orders_topic)
                    and value(text, "segstream_consumer_lag_records") == 0)

        await wait_for(all_counted, timeout=30, what="the events counted and the lag drained")
        text = await scrape(http)
        assert value(text, "segstream_events_duplicate_total", type="order.placed") == 1
        assert value(text, "segstream_dead_letters_total", stage="process",
                     reason="invalid_json") == 1
        assert value(text, "segstream_membership_changes_total", segment="big", reason="event",
                     change="added") == 20
        assert value(text, "segstream_records_consumed_total") == 22
        assert value(text, "segstream_batch_size_records_sum") == 22
        assert value(text, "segstream_event_to_membership_seconds_count") >= 1
        assert value(text, "segstream_consumer_time_lag_seconds", topic=orders_topic) == 0
        assert not has_sample(text, "segstream_consumer_lag_records",
                              group=f"{settings.group_id}-sync")  # not this role's group
        assert value(text, "segstream_reading_ok", reading="lag") == 1
        assert value(text, "segstream_service_up", service="redis") == 1

        async def members_counted() -> bool:
            return value(await scrape(http), "segstream_segment_members", segment="big") == 20

        await wait_for(members_counted, timeout=10, what="members per segment")


async def test_a_sync_role_serves_health_and_its_own_metrics(settings: Settings) -> None:
    await create_topics(settings)
    settings = settings.with_changes(secret_key=SecretStr("s" * 40))
    async with role(settings, UpOptions(http=False, processor=False)) as http:
        assert (await http.get("/health/live")).status_code == 200
        ready = (await http.get("/health/ready")).json()
        assert ready["checks"] == {"redis": "ok", "kafka": "ok", "sync": "ok"}, ready
        text = await scrape(http)
        assert has_sample(text, "segstream_sync_members_synced_total")
        assert has_sample(text, "segstream_consumer_lag_records",
                          group=f"{settings.group_id}-sync")
        assert not has_sample(text, "segstream_consumer_lag_records", group=settings.group_id)
        assert not has_sample(text, "segstream_records_consumed_total")  # no processor here
        assert (await http.get("/segments")).status_code == 404  # the API is not served
