"""`StateStore.commit`: one atomic script call per partition-batch, checked against Redis itself."""

from __future__ import annotations

import os
import uuid

from redis.asyncio import Redis

from streams.store import PartitionWrite, StateStore


async def test_commit_writes_every_kind_of_change(redis_client: Redis) -> None:
    store = StateStore(redis_client, f"t{uuid.uuid4().hex[:8]}")
    keys = store.keys(3)
    # binary states of every msgpack str size class, and more fields than one Lua unpack takes
    blobs = {f"c-{n}": os.urandom(size) for n, size in enumerate(
        [0, 1, 255, 256, 65535, 65536, 200_000] + [40] * 5000)}
    first = PartitionWrite(offsets={"orders:3": 17, "customers:3": 4})
    for customer_id, blob in blobs.items():
        first.put_state(customer_id, blob)
    for n in range(3000):
        first.member_added("vip", f"c-{n}")
    first.member_added("gone", "c-1")
    first.meta["definitions"] = "vip@1"
    await store.commit(3, first)

    assert await store.load_states(3, list(blobs)) == list(blobs.values())
    assert await store.load_offsets(3) == {"orders:3": 17, "customers:3": 4}
    assert await redis_client.scard(keys.members("vip")) == 3000

    second = PartitionWrite(offsets={"orders:3": 20})
    second.delete_state("c-0")
    second.member_removed("vip", "c-1")
    second.member_added("vip", "c-2")  # already a member: still one
    second.member_removed("vip", "c-3")
    second.member_added("vip", "c-3")  # the batch's last change wins
    second.member_added("vip", "new")
    second.drop_segments = {"gone"}
    await store.commit(3, second)

    assert await store.load_states(3, ["c-0", "c-1"]) == [None, blobs["c-1"]]
    assert await store.load_offsets(3) == {"orders:3": 20, "customers:3": 4}
    members = {m.decode() for m in await redis_client.smembers(keys.members("vip"))}
    assert members == {f"c-{n}" for n in range(3000)} - {"c-1"} | {"new"}
    assert not await redis_client.exists(keys.members("gone"))
    assert await store.load_meta(3) == {"definitions": "vip@1"}


async def test_an_empty_write_touches_nothing(redis_client: Redis) -> None:
    store = StateStore(redis_client, f"t{uuid.uuid4().hex[:8]}")
    await store.commit(0, PartitionWrite())
    assert await redis_client.keys(f"{store.keys(0).tag}*") == []


async def test_commit_many_commits_each_partition(redis_client: Redis) -> None:
    store = StateStore(redis_client, f"t{uuid.uuid4().hex[:8]}")
    writes = {}
    for p in range(4):
        write = writes[p] = PartitionWrite(offsets={f"orders:{p}": p + 1})
        write.put_state(f"c-{p}", bytes([p]) * 10)
        write.member_added("vip", f"c-{p}")
    writes[4] = PartitionWrite()  # nothing to do: skipped
    await store.commit_many(writes)
    for p in range(4):
        assert await store.load_states(p, [f"c-{p}"]) == [bytes([p]) * 10]
        assert await store.load_offsets(p) == {f"orders:{p}": p + 1}
        assert await redis_client.smembers(store.keys(p).members("vip")) == {f"c-{p}".encode()}
