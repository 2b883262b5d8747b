"""Fixtures shared by every test: real Kafka and Redis, unique names per test, no leaks.

``services`` is one broker and one Redis server for the whole session: the embedded
Tansu and Valkey by default; ``SEGSTREAM_TEST_KAFKA_BOOTSTRAP`` and
``SEGSTREAM_TEST_REDIS_URL`` point at running ones instead; ``SEGSTREAM_TEST_DOCKER=1``
starts Apache Kafka and Redis with testcontainers (tests needing them are skipped,
not faked, when Docker is not usable). Tests stay apart by name, not by server:
``settings`` gives each test its own topic prefix, key prefix and group id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from starlette.types import Receive, Scope, Send

from providers.fakes.base import FakeProvider
from providers.fakes.server import FAKES, serve_fake
from streams.local.embedded import EmbeddedServices
from streams.settings import Settings
from streams.storage.client import redis_client as redis_client_for
from tests.cluster import redis_cluster
from tests.providers.harness import PROVIDERS, Harness, build_fake

LEAK_GRACE_S = 2.0  # time tasks get to finish after the test's fixtures are torn down


@dataclass(frozen=True)
class TestServices:
    """Where the session's broker and Redis server answer, and what they are."""

    __test__ = False  # not a test class, despite the name

    kafka_bootstrap: str
    redis_url: str
    kind: str  # "embedded" (Tansu/Valkey), "external" or "docker"
    redis_cluster: bool = False

    @property
    def is_tansu(self) -> bool:
        return self.kind == "embedded"


def pytest_configure(config: pytest.Config) -> None:
    # Every `segstream up` a test starts publishes its services for the user's other shells;
    # in tests they go to a folder of this session, never the home folder, and a `produce`
    # started by a test never finds the `up` of the developer running the suite.
    # XDG_STATE_HOME too, for the tests that start roles without any SEGSTREAM_ variable.
    state = tempfile.mkdtemp(prefix="segstream-test-state-")
    os.environ["SEGSTREAM_STATE_DIR"] = state
    os.environ["XDG_STATE_HOME"] = state
    config.addinivalue_line(
        "markers",
        "allow_task_leaks: the test hands tasks to a wider-scoped fixture on purpose",
    )
    config.addinivalue_line(
        "markers",
        "single_redis: the test needs one Redis server (CLIENT PAUSE, RENAME across slots, a "
        "plain client); skipped when the suite runs on a Redis Cluster",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("SEGSTREAM_TEST_REDIS_CLUSTER") != "1":
        return
    skip = pytest.mark.skip(reason="needs a single Redis server, not a cluster")
    for item in items:
        if item.get_closest_marker("single_redis"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServices]:
    if os.environ.get("SEGSTREAM_TEST_DOCKER") == "1":
        yield from _docker_services()
        return
    kafka = os.environ.get("SEGSTREAM_TEST_KAFKA_BOOTSTRAP") or None
    redis_url = os.environ.get("SEGSTREAM_TEST_REDIS_URL") or None
    if os.environ.get("SEGSTREAM_TEST_REDIS_CLUSTER") == "1":
        yield from _with_redis_cluster(tmp_path_factory, kafka)
        return
    if kafka and redis_url:
        yield TestServices(kafka, redis_url, "external")
        return
    embedded = EmbeddedServices(
        tmp_path_factory.mktemp("services"), kafka=kafka is None, redis=redis_url is None
    )
    with embedded:
        yield TestServices(
            kafka or embedded.kafka_bootstrap,
            redis_url or embedded.redis_url,
            "embedded" if kafka is None else "external",
        )


def _with_redis_cluster(
    tmp_path_factory: pytest.TempPathFactory, kafka: str | None
) -> Iterator[TestServices]:
    """SEGSTREAM_TEST_REDIS_CLUSTER=1: the same tests on a local 3-master Redis Cluster."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(redis_cluster(tmp_path_factory.mktemp("cluster")))
        if kafka is None:
            embedded = stack.enter_context(
                EmbeddedServices(tmp_path_factory.mktemp("services"), redis=False))
            kafka = embedded.kafka_bootstrap
        yield TestServices(kafka, url, "embedded", redis_cluster=True)


def _docker_services() -> Iterator[TestServices]:
    try:  # testcontainers is optional: only this path needs it
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        kafka, redis_server = KafkaContainer(), RedisContainer()
        kafka.start()
    except Exception as exc:  # no package, no daemon, no image: all mean "not here"
        pytest.skip(f"SEGSTREAM_TEST_DOCKER=1 but Docker is not usable: {exc!r}")
    with contextlib.ExitStack() as stack:
        stack.callback(kafka.stop)
        redis_server.start()
        stack.callback(redis_server.stop)
        host, port = redis_server.get_container_host_ip(), redis_server.get_exposed_port(6379)
        yield TestServices(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", "docker")


@pytest.fixture
def settings(services: TestServices, tmp_path: Path) -> Settings:
    """Settings on the session's services, with names no other test uses."""
    unique = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        redis_url=services.redis_url,
        topic_prefix=f"{unique}.",
        redis_cluster=services.redis_cluster,
        key_prefix=unique,
        group_id=f"{unique}-processor",
        partitions=4,
        run_dir=tmp_path / "run",
    )


@pytest.fixture
async def redis_client(services: TestServices) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis_client_for(services.redis_url, cluster=services.redis_cluster) as client:
        yield client


# Which task created each task, so tasks spawned by a long-lived fixture's tasks (a
# session-wide consumer's fetches, say) are not blamed on the test that was running.
_creators: weakref.WeakKeyDictionary[asyncio.Task[Any], asyncio.Task[Any] | None] = (
    weakref.WeakKeyDictionary()
)


def _recording_task_factory(
    loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
) -> asyncio.Task[Any]:
    task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, **kwargs)
    _creators[task] = asyncio.current_task(loop)
    return task


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running once its fixtures are torn down.

    Autouse and function-scoped, this is set up after the wider-scoped fixtures and
    torn down after every other function-scoped one. Tasks that existed before, and
    tasks those started, are not the test's.
    """
    loop = asyncio.get_running_loop()
    if loop.get_task_factory() is None:
        loop.set_task_factory(_recording_task_factory)
    before = asyncio.all_tasks(loop)
    yield
    if request.node.get_closest_marker("allow_task_leaks"):
        return
    leaked = await _tasks_still_running(before)
    if leaked:
        listed = "\n".join(f"  {task!r}" for task in leaked)
        for task in leaked:  # so they cannot disturb the tests after this one
            task.cancel()
        await asyncio.wait(leaked, timeout=LEAK_GRACE_S)
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running:\n{listed}")


async def _tasks_still_running(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LEAK_GRACE_S
    while True:
        leaked = {
            task
            for task in asyncio.all_tasks(loop) - before
            if task is not asyncio.current_task() and not _descends_from(task, before)
        }
        if not leaked or loop.time() > deadline:
            return leaked
        await asyncio.sleep(0.05)


def _descends_from(task: asyncio.Task[Any], ancestors: set[asyncio.Task[Any]]) -> bool:
    creator = _creators.get(task)
    while creator is not None:
        if creator in ancestors:
            return True
        creator = _creators.get(creator)
    return False


# -- fake providers: one loopback server per fake for the session, a fresh fake per test ------
# Starting and stopping uvicorn costs ~0.2 s, so each provider gets one server whose app
# (`FakeSlot`) forwards to the fake the current test installed.


class FakeSlot:
    """An ASGI app forwarding to whichever fake the running test put in it."""

    def __init__(self, api_prefix: str) -> None:
        self.api_prefix = api_prefix
        self.target: FakeProvider | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no fake installed for this test"
        await self.target(scope, receive, send)


@pytest.fixture(scope="session")
async def fake_servers() -> AsyncIterator[dict[str, tuple[FakeSlot, str]]]:
    async with AsyncExitStack() as stack:
        servers = {}
        for provider in PROVIDERS:
            slot = FakeSlot(FAKES[provider].api_prefix)
            servers[provider] = (slot, await stack.enter_async_context(serve_fake(slot)))
        yield servers


async def _harness(provider: str, servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    slot, base_url = servers[provider]
    fake = build_fake(provider)
    slot.target = fake
    return Harness(provider, fake, base_url)


@pytest.fixture(params=PROVIDERS)
async def harness(
    request: pytest.FixtureRequest, fake_servers: dict[str, tuple[FakeSlot, str]]
) -> Harness:
    """Each provider's fake in turn (tests using it run three times)."""
    return await _harness(request.param, fake_servers)


@pytest.fixture
async def mailchimp(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("mailchimp", fake_servers)


@pytest.fixture
async def activecampaign(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("activecampaign", fake_servers)


@pytest.fixture
async def sendlane(fake_servers: dict[str, tuple[FakeSlot, str]]) -> Harness:
    return await _harness("sendlane", fake_servers)
