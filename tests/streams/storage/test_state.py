"""`StateStore.commit`: one atomic script call per partition-batch, checked against Redis itself."""

from __future__ import annotations

import os
import uuid

import pytest
from redis.asyncio import Redis

from streams.storage.definitions import DefinitionStore
from streams.storage.state import CommitFenced, PartitionWrite, StateStore


async def test_commit_writes_every_kind_of_change(redis_client: Redis) -> None:
    store = StateStore(redis_client, f"t{uuid.uuid4().hex[:8]}")
    # binary states of every msgpack str size class, and more fields than one Lua unpack takes
    blobs = {f"c-{n}": os.urandom(size) for n, size in enumerate(
        [0, 1, 255, 256, 65535, 65536, 200_000] + [40] * 5000)}
    first = PartitionWrite(offsets={"orders:3": 17, "customers:3": 4})
    for customer_id, blob in blobs.items():
        first.put_state(customer_id, blob)
    for n in range(3000):  # slot 0: "vip"; slot 9 (second mask byte): "gone"
        first.set_mask(f"c-{n}", 1 | (1 << 9 if n == 1 else 0))
        first.count("vip", 1)
    first.count("gone", 1)
    first.meta["definitions"] = "vip@1"
    await store.commit(3, first)

    assert await store.load_states(3, list(blobs)) == list(blobs.values())
    assert await store.load_offsets(3) == {"orders:3": 17, "customers:3": 4}
    assert await store.member_counts(4, ["vip", "gone", "never"]) == {
        "vip": 3000, "gone": 1, "never": 0}
    assert sorted(await store.members(3, 9)) == ["c-1"]

    second = PartitionWrite(offsets={"orders:3": 20})
    second.delete_state("c-0")  # a deleted customer loses its mask too
    second.set_mask("c-0", 0)
    second.set_mask("c-1", 0)  # member of nothing: its mask entry goes
    second.set_mask("new", 1)
    second.count("vip", -2 + 1)
    second.count("gone", -1)
    second.drop_segments = {"gone"}
    await store.commit(3, second)

    assert await store.load_states(3, ["c-0", "c-1"]) == [None, blobs["c-1"]]
    assert await store.load_offsets(3) == {"orders:3": 20, "customers:3": 4}
    assert set(await store.members(3, 0)) == {f"c-{n}" for n in range(2, 3000)} | {"new"}
    assert await store.members(3, 9) == []
    assert await store.member_counts(4, ["vip", "gone"]) == {"vip": 2999, "gone": 0}
    assert not await redis_client.hexists(store.keys(3).counts, "gone")
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
        write.set_mask(f"c-{p}", 1 << 3)
        write.count("vip", 1)
    writes[4] = PartitionWrite()  # nothing to do: skipped
    await store.commit_many(writes)
    for p in range(4):
        assert await store.load_states(p, [f"c-{p}"]) == [bytes([p]) * 10]
        assert await store.load_offsets(p) == {f"orders:{p}": p + 1}
        assert await store.members(p, 3) == [f"c-{p}"]
    assert await store.member_count(5, "vip") == 4


async def test_a_claimed_partition_applies_each_numbered_commit_once_and_fences_others(
    redis_client: Redis,
) -> None:
    store = StateStore(redis_client, f"t{uuid.uuid4().hex[:8]}")
    assert await store.claim(3, "first") == 0

    def write(seq: int, owner: str) -> PartitionWrite:
        w = PartitionWrite(seq=seq, owner=owner)
        w.count("vip", 1)
        w.offsets["customers:3"] = seq * 10
        return w

    await store.commit_many({3: write(1, "first")})
    await store.commit_many({3: write(1, "first")})  # a retried call: applied once
    assert await store.member_count(4, "vip") == 1
    with pytest.raises(CommitFenced):
        await store.commit_many({3: write(3, "first")})  # a commit is missing in between
    assert await store.claim(3, "second") == 1  # the partition moves on
    with pytest.raises(CommitFenced) as fenced:
        await store.commit_many({3: write(2, "first")})  # the old owner's late commit
    assert fenced.value.partitions == [3]
    await store.commit_many({3: write(2, "second")})
    assert await store.member_count(4, "vip") == 2
    assert await store.load_offsets(3) == {"customers:3": 20}


@pytest.mark.single_redis
async def test_definitions_written_before_the_hash_tag_are_moved_once(redis_client: Redis) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    body = {"name": "Big", "groups": [{"conditions": [
        {"field": "total_spent", "op": "gt", "value": 1}]}]}
    store = DefinitionStore(redis_client, prefix)
    await store.put("big", body)
    for new, old in ((store.key, f"{prefix}:defs"), (store.rev_key, f"{prefix}:defs:rev"),
                     (store.slot_key, f"{prefix}:defs:slot")):
        await redis_client.rename(new, old)  # as an older version left them
    assert (await store.load()).live == {}
    assert await store.migrate() is True
    loaded = await store.load()
    assert list(loaded.live) == ["big"] and loaded.revision == 1
    assert await store.migrate() is False
