"""Redis layout of the processor's state, and the atomic per-partition commit.

Every key a partition writes carries the partition as its hash tag (`{p3}`), so one batch of one
partition commits in one atomic script call on one slot, on one Redis and on Redis Cluster alike:

    <prefix>:{p3}:state          hash   customer_id -> msgpack FeatureState
    <prefix>:{p3}:offsets        hash   "<topic>:<partition>" -> next offset to read
    <prefix>:{p3}:meta           hash   applied definitions fingerprint, ...
    <prefix>:{p3}:m:<segment>    set    customer ids that are members of <segment>

Definitions are global (see `streams.definitions`). Offsets stored beside the state are the
source of truth for exactly-once: on assignment the consumer seeks to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from redis.asyncio import Redis


@dataclass(frozen=True)
class PartitionKeys:
    """Key names of one partition's state."""

    prefix: str
    partition: int

    @property
    def tag(self) -> str:
        return f"{self.prefix}:{{p{self.partition}}}"

    @property
    def state(self) -> str:
        return f"{self.tag}:state"

    @property
    def offsets(self) -> str:
        return f"{self.tag}:offsets"

    @property
    def meta(self) -> str:
        return f"{self.tag}:meta"

    def members(self, segment_id: str) -> str:
        return f"{self.tag}:m:{segment_id}"


@dataclass
class PartitionWrite:
    """Everything one batch changes in one partition, committed atomically by `commit`."""

    states: dict[str, bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    members: dict[str, dict[str, bool]] = field(default_factory=dict)
    """segment id -> customer id -> member afterwards (the last change of the batch wins)."""
    offsets: dict[str, int] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    drop_segments: set[str] = field(default_factory=set)

    def put_state(self, customer_id: str, blob: bytes) -> None:
        self.states[customer_id] = blob
        self.deleted.discard(customer_id)

    def delete_state(self, customer_id: str) -> None:
        self.states.pop(customer_id, None)
        self.deleted.add(customer_id)

    def member(self, segment_id: str, customer_id: str, added: bool) -> None:
        changes = self.members.get(segment_id)
        if changes is None:
            changes = self.members[segment_id] = {}
        changes[customer_id] = added

    def member_added(self, segment_id: str, customer_id: str) -> None:
        self.member(segment_id, customer_id, True)

    def member_removed(self, segment_id: str, customer_id: str) -> None:
        self.member(segment_id, customer_id, False)

    def is_empty(self) -> bool:
        return not (
            self.states or self.deleted or self.members or self.offsets or self.meta
            or self.drop_segments
        )


# One atomic call per partition-batch. The payload is one msgpack argument, so the client packs
# a single command instead of redis-py packing every field of HSET/SADD/SREM in Python (~12 µs a
# command, and a cold batch has thousands of arguments); the server unpacks it with cmsgpack.
# Every key it touches is in KEYS and shares the partition's hash tag: valid on Redis Cluster.
# payload: [states flat, deleted, [[key index, members to add, members to remove]...],
#           [key index to delete...], offsets flat, meta flat]
_COMMIT_LUA: Final = """
local p = cmsgpack.unpack(ARGV[1])
local function each(cmd, key, items, step)
  for i = 1, #items, step do
    redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
each('HSET', KEYS[1], p[1], 2000)
each('HDEL', KEYS[1], p[2], 1000)
for _, m in ipairs(p[3]) do
  each('SADD', KEYS[m[1]], m[2], 1000)
  each('SREM', KEYS[m[1]], m[3], 1000)
end
for _, k in ipairs(p[4]) do redis.call('DEL', KEYS[k]) end
each('HSET', KEYS[2], p[5], 2000)
each('HSET', KEYS[3], p[6], 2000)
return 1
"""
_PAYLOAD: Final = msgspec.msgpack.Encoder()


def _flat(mapping: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, value in mapping.items():
        out.append(key)
        out.append(_lua_bytes(value) if isinstance(value, bytes) else str(value))
    return out


def _lua_bytes(blob: bytes) -> msgspec.Raw:
    """`blob` as a msgpack str: the server's cmsgpack predates the bin types (it rejects them),
    and a str of any bytes becomes a Lua string unchanged."""
    size = len(blob)
    if size < 0x100:
        head = b"\xd9" + size.to_bytes(1, "big")
    elif size < 0x10000:
        head = b"\xda" + size.to_bytes(2, "big")
    else:
        head = b"\xdb" + size.to_bytes(4, "big")
    return msgspec.Raw(head + blob)


class StateStore:
    """Reads and atomically writes the processor state of partitions in Redis."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        # redis-py types each command as sync-or-async; this class only uses the async client
        self.redis: Any = redis
        self.prefix = prefix
        self._commit_script = redis.register_script(_COMMIT_LUA)

    def keys(self, partition: int) -> PartitionKeys:
        return PartitionKeys(self.prefix, partition)

    async def load_states(self, partition: int, customer_ids: list[str]) -> list[bytes | None]:
        if not customer_ids:
            return []
        result: list[bytes | None] = await self.redis.hmget(
            self.keys(partition).state, customer_ids
        )
        return result

    async def load_offsets(self, partition: int) -> dict[str, int]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys(partition).offsets)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def load_meta(self, partition: int) -> dict[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.keys(partition).meta)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def scan_states(
        self, partition: int, cursor: int, count: int
    ) -> tuple[int, dict[str, bytes]]:
        next_cursor, raw = await self.redis.hscan(self.keys(partition).state, cursor, count=count)
        return int(next_cursor), {k.decode(): v for k, v in raw.items()}

    async def commit(self, partition: int, write: PartitionWrite) -> None:
        """Apply `write` atomically: state, memberships and offsets move together."""
        await self.commit_many({partition: write})

    async def commit_many(self, writes: Mapping[int, PartitionWrite]) -> None:
        """Commit several partitions' writes in one round trip on one connection.

        Each partition's write is one script call, atomic on its own slot; partitions need no
        order between them (each replays from its own stored offsets after a crash). One
        connection also keeps one query buffer on the server instead of one per partition.
        """
        calls = [self._commit_args(p, w) for p, w in writes.items() if not w.is_empty()]
        if not calls:
            return
        if len(calls) == 1:
            await self._commit_script(keys=calls[0][0], args=calls[0][1])
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._commit_script(keys=keys, args=args, client=pipe)
            await pipe.execute()

    def _commit_args(self, partition: int, write: PartitionWrite) -> tuple[list[str], list[bytes]]:
        keys = self.keys(partition)
        names = [keys.state, keys.offsets, keys.meta]
        member_ops = []
        for segment_id, changes in write.members.items():
            names.append(keys.members(segment_id))
            adds = [c for c, added in changes.items() if added]
            member_ops.append((len(names), adds, [c for c, added in changes.items() if not added]))
        drops = []
        for segment_id in write.drop_segments:
            names.append(keys.members(segment_id))
            drops.append(len(names))
        payload = _PAYLOAD.encode((
            _flat(write.states), list(write.deleted), member_ops, drops, _flat(write.offsets),
            _flat(write.meta),
        ))
        return names, [payload]

    async def wipe_partition(self, partition: int) -> None:
        """Delete every key of a partition, member sets of segments long deleted included."""
        async for key in self.redis.scan_iter(match=f"{self.keys(partition).tag}:*", count=1000):
            await self.redis.delete(key)

    async def member_count(self, partitions: int, segment_id: str) -> int:
        return (await self.member_counts(partitions, [segment_id]))[segment_id]

    async def member_counts(self, partitions: int, segment_ids: list[str]) -> dict[str, int]:
        """Members of each segment, summed over partitions, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for segment_id in segment_ids:
                for p in range(partitions):
                    pipe.scard(self.keys(p).members(segment_id))
            counts: list[int] = await pipe.execute()
        return {s: sum(counts[i * partitions:(i + 1) * partitions])
                for i, s in enumerate(segment_ids)}

    async def scan_members(
        self, partition: int, segment_id: str, cursor: int, count: int
    ) -> tuple[int, list[str]]:
        """One SSCAN step over a partition's member set of `segment_id`."""
        key = self.keys(partition).members(segment_id)
        next_cursor, raw = await self.redis.sscan(key, cursor, count=count)
        return int(next_cursor), [m.decode() for m in raw]

    async def reconciled(self, partitions: int) -> list[frozenset[str]]:
        """Per partition, the `id@version` entries of the definitions it has fully reconciled."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.hget(self.keys(p).meta, "definitions")
            raw: list[bytes | None] = await pipe.execute()
        return [frozenset(r.decode().split(",")) if r else frozenset() for r in raw]

    async def load_state(self, partition: int, customer_id: str) -> bytes | None:
        blob: bytes | None = await self.redis.hget(self.keys(partition).state, customer_id)
        return blob

    async def state_count(self, partitions: int) -> int:
        """Stored customer states over all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.hlen(self.keys(p).state)
            counts: list[int] = await pipe.execute()
        return sum(counts)

    async def global_meta(self) -> Mapping[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(f"{self.prefix}:meta")
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def set_global_meta(self, values: Mapping[str, str]) -> None:
        await self.redis.hset(f"{self.prefix}:meta", mapping=dict(values))
