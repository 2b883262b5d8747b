"""What a Redis Cluster slot migration does to segstream's storage, on a local 3-master cluster.

A migration moves a slot's keys one MIGRATE call at a time between `CLUSTER SETSLOT ...
MIGRATING/IMPORTING` and `SETSLOT ... NODE`. Meanwhile the source answers ASK for a key it no
longer has, and TRYAGAIN to a multi-key command (our commit script, a WATCH of two keys) whose
keys it has only some of, which includes keys that do not exist yet. These tests move a
partition's slot (`{p3}`) or the definitions' slot (`{defs}`) by hand and record what the role's
Redis client (`streams.storage.client`, redis-py's cluster client) and the stores do: the README's
"Managed Redis" and the design notes' "Redis Cluster slot migration" rest on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from streams.storage.client import patient_retry, redis_client
from streams.storage.definitions import DefinitionStore
from streams.storage.state import PartitionWrite, StateStore
from tests.cluster import redis_cluster

PARTITION = 3
SEGMENT = {"name": "buyers", "groups": [{"conditions": [
    {"field": "order_count", "op": "gte", "value": 1}]}]}
REDIS_PY_TRIES = 16
"""redis-py's cluster client sends one command at most this many times (`RedisClusterRequestTTL`),
following redirects and waiting briefly after TRYAGAIN."""


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("slot-migration")) as url:
        yield url


@pytest.fixture
async def cluster(cluster_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    async with redis_client(cluster_url, cluster=True, **patient_retry()) as client:
        yield client


class Migration:
    """One slot moving from its owner to another master, driven step by step."""

    def __init__(self, client: redis.asyncio.Redis, slot: int) -> None:
        cluster: RedisCluster = client  # type: ignore[assignment]
        owner = cluster.nodes_manager.get_node_from_slot(slot)
        other = next(n for n in cluster.get_primaries() if n.name != owner.name)
        self.slot = slot
        self.source = redis.asyncio.Redis(host=owner.host, port=owner.port)
        self.target = redis.asyncio.Redis(host=other.host, port=other.port)
        self.target_address = (other.host, other.port)

    async def start(self) -> None:
        source_id, target_id = await self._ids()
        await self.target.execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", source_id)
        await self.source.execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", target_id)

    async def keys_left(self) -> list[bytes]:
        keys: list[bytes] = await self.source.execute_command(
            "CLUSTER GETKEYSINSLOT", self.slot, 100)
        return keys

    async def move(self, keys: list[bytes]) -> None:
        host, port = self.target_address
        await self.source.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)

    async def finish(self) -> None:
        """Move what is left and hand the slot over."""
        if left := await self.keys_left():
            await self.move(left)
        _, target_id = await self._ids()
        for node in (self.target, self.source):
            await node.execute_command("CLUSTER SETSLOT", self.slot, "NODE", target_id)

    async def tryagains(self) -> int:
        """TRYAGAIN answers both nodes have given so far."""
        total = 0
        for node in (self.source, self.target):
            stats = await node.info("errorstats")
            total += int(stats.get("errorstat_TRYAGAIN", {}).get("count", 0))
        return total

    async def close(self) -> None:
        await self.source.aclose()
        await self.target.aclose()

    async def _ids(self) -> tuple[str, str]:
        source_id = (await self.source.execute_command("CLUSTER MYID")).decode()
        target_id = (await self.target.execute_command("CLUSTER MYID")).decode()
        return source_id, target_id


def slot_of(client: redis.asyncio.Redis, key: str) -> int:
    cluster: RedisCluster = client  # type: ignore[assignment]
    return cluster.keyslot(key)


@contextlib.asynccontextmanager
async def migrating(client: redis.asyncio.Redis, key: str) -> AsyncIterator[Migration]:
    migration = Migration(client, slot_of(client, key))
    await migration.start()
    try:
        yield migration
    finally:
        await migration.finish()
        await migration.close()


def _write(offset: int, *, every_key: bool) -> PartitionWrite:
    """A partition commit: state and offsets; with `every_key`, all six of its keys written."""
    write = PartitionWrite()
    write.put_state("c-1", b"state")
    write.offsets["customers:3"] = offset
    if every_key:
        write.set_mask("c-1", 1)
        write.count("buyers", 1)
        write.timers["c-1"] = 1_000
        write.meta["k"] = "v"
    return write


async def _finish_after(migration: Migration, tryagains: int, task: asyncio.Task[None]) -> int:
    """Finish the migration once the nodes have answered `tryagains` TRYAGAINs, or `task` ended;
    return how many they answered."""
    start = await migration.tryagains()
    while not task.done() and await migration.tryagains() - start < tryagains:
        await asyncio.sleep(0.005)
    seen = await migration.tryagains() - start
    await migration.finish()
    return seen


async def test_a_partitions_reads_follow_the_migration(cluster: redis.asyncio.Redis) -> None:
    store = StateStore(cluster, "mig-reads")
    await store.commit(PARTITION, _write(10, every_key=True))
    async with migrating(cluster, store.keys(PARTITION).state) as migration:
        await migration.move([store.keys(PARTITION).offsets.encode()])
        # single-key reads: ASK to the target for the moved key, the source for the others
        assert await store.load_offsets(PARTITION) == {"customers:3": 10}
        assert await store.load_states(PARTITION, ["c-1"]) == [b"state"]
    assert await store.load_offsets(PARTITION) == {"customers:3": 10}  # MOVED, then served


async def test_a_commit_waits_out_a_migration_shorter_than_the_clients_tries(
    cluster: redis.asyncio.Redis,
) -> None:
    """The commit script names six keys; while the slot migrates and only some of them are on
    the node asked (two of six exist here), it gets TRYAGAIN, and redis-py tries again."""
    store = StateStore(cluster, "mig-short")
    await store.commit(PARTITION, _write(10, every_key=False))
    migration = Migration(cluster, slot_of(cluster, store.keys(PARTITION).state))
    await migration.start()
    commit = asyncio.create_task(store.commit(PARTITION, _write(20, every_key=False)))
    assert await _finish_after(migration, 1, commit) >= 1  # it was refused meanwhile
    await commit
    await migration.close()
    assert await store.load_offsets(PARTITION) == {"customers:3": 20}


async def test_a_commit_waits_out_a_longer_migration(cluster: redis.asyncio.Redis) -> None:
    store = StateStore(cluster, "mig-long")
    await store.commit(PARTITION, _write(10, every_key=False))
    migration = Migration(cluster, slot_of(cluster, store.keys(PARTITION).state))
    await migration.start()
    commit = asyncio.create_task(store.commit(PARTITION, _write(20, every_key=False)))
    try:
        await _finish_after(migration, 3 * REDIS_PY_TRIES, commit)
        await commit
    finally:
        await migration.close()
    assert await store.load_offsets(PARTITION) == {"customers:3": 20}


async def test_a_definition_write_waits_out_a_migration(cluster: redis.asyncio.Redis) -> None:
    definitions = DefinitionStore(cluster, "mig-defs")
    await definitions.put("first", SEGMENT)
    migration = Migration(cluster, slot_of(cluster, definitions.key))
    await migration.start()
    put = asyncio.create_task(definitions.put("second", SEGMENT))
    try:
        await _finish_after(migration, 1, put)
        await put
    finally:
        await migration.close()
    assert await definitions.get("second") is not None
