"""Redis layout of the processor's state, and the atomic per-partition commit.

Every key a partition writes carries the partition as its hash tag (`{p3}`), so one batch of one
partition commits in one atomic script call on one slot, on one Redis and on Redis Cluster alike:

    <prefix>:{p3}:state          hash   customer_id -> msgpack FeatureState
    <prefix>:{p3}:masks          hash   customer_id -> membership bitmask (little-endian bytes;
                                        bit n is the segment in slot n), members of any only
    <prefix>:{p3}:counts         hash   segment id -> members in this partition
    <prefix>:{p3}:offsets        hash   "<topic>:<partition>" -> next offset to read
    <prefix>:{p3}:meta           hash   applied definitions fingerprint, ...
    <prefix>:{p3}:timers         zset   customer_id scored by the epoch ms of its next
                                        re-evaluation with time alone (one per customer)

Memberships are one bitmask per customer rather than a set per segment: a set pays per
membership, a mask once per customer for all its segments (docs/design.md, "Memberships as one
bitmask per customer, not a set per segment"). A segment's members are found by scanning the
masks (API pages, provider reconcile: rare reads); counts are kept exact beside them, since the
engine knows every flip.

Definitions are global (see `streams.storage.definitions`). Offsets stored beside the state are the
source of truth for exactly-once: on assignment the consumer seeks to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from providers.reconcile import SegmentEmails
from segments.features import decode_state, mask_bytes
from streams.storage.client import no_cleanup, through_slot_moves


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

    @property
    def masks(self) -> str:
        return f"{self.tag}:masks"

    @property
    def counts(self) -> str:
        return f"{self.tag}:counts"

    @property
    def timers(self) -> str:
        return f"{self.tag}:timers"


@dataclass
class PartitionWrite:
    """Everything one batch changes in one partition, committed atomically by `commit`."""

    states: dict[str, bytes] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    masks: dict[str, int] = field(default_factory=dict)
    """customer id -> membership mask afterwards (0: member of nothing, the entry is removed)."""
    counts: dict[str, int] = field(default_factory=dict)
    """segment id -> change of its member count in this partition."""
    offsets: dict[str, int] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    drop_segments: set[str] = field(default_factory=set)
    """Segments deleted for good: their counts go."""
    timers: dict[str, int | None] = field(default_factory=dict)
    """customer id -> its next re-evaluation (epoch ms), or None: it has none."""
    seq: int | None = None
    """This commit's number in the partition (None: unguarded), by the writer `owner` that
    claimed it (`StateStore.claim`). It applies only if `owner` still holds the partition and
    the last commit stored was `seq - 1`; if it was `seq`, this very commit was applied already
    (a retried call) and nothing happens; anything else: `CommitFenced`."""
    owner: str = ""

    def put_state(self, customer_id: str, blob: bytes) -> None:
        self.states[customer_id] = blob
        self.deleted.discard(customer_id)

    def delete_state(self, customer_id: str) -> None:
        self.states.pop(customer_id, None)
        self.deleted.add(customer_id)

    def set_mask(self, customer_id: str, mask: int) -> None:
        self.masks[customer_id] = mask

    def count(self, segment_id: str, delta: int) -> None:
        self.counts[segment_id] = self.counts.get(segment_id, 0) + delta

    def is_empty(self) -> bool:
        return not (
            self.states or self.deleted or self.masks or self.counts or self.offsets
            or self.meta or self.drop_segments or self.timers
        )


# One atomic call per partition-batch. The payload is one msgpack argument, so the client packs
# a single command instead of redis-py packing every field of HSET/HDEL in Python (a cold batch
# has thousands of arguments); the server unpacks it with cmsgpack.
# Every key it touches is in KEYS and shares the partition's hash tag: valid on Redis Cluster.
# KEYS: state, offsets, meta, masks, counts, timers
# payload: [states flat, deleted, masks flat, masks to remove, counts flat (segment, delta),
#           counts to remove, offsets flat, meta flat, timers flat (at, customer), timers to
#           remove]; ARGV[2], when given, the commit's sequence number (see PartitionWrite.seq)
# and ARGV[3] the owner that claimed the partition
# returns 1 (applied), 0 (applied before: a retry), -1 (fenced: another writer)
_COMMIT_LUA: Final = """
if ARGV[2] then
  if redis.call('HGET', KEYS[3], 'owner') ~= ARGV[3] then return -1 end
  local n = tonumber(ARGV[2])
  local stored = tonumber(redis.call('HGET', KEYS[3], 'seq') or '0')
  if stored == n then return 0 end
  if stored ~= n - 1 then return -1 end
  redis.call('HSET', KEYS[3], 'seq', ARGV[2])
end
local p = cmsgpack.unpack(ARGV[1])
local function each(cmd, key, items, step)
  for i = 1, #items, step do
    redis.call(cmd, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end
each('HSET', KEYS[1], p[1], 2000)
each('HDEL', KEYS[1], p[2], 1000)
each('HSET', KEYS[4], p[3], 2000)
each('HDEL', KEYS[4], p[4], 1000)
for i = 1, #p[5], 2 do redis.call('HINCRBY', KEYS[5], p[5][i], p[5][i + 1]) end
each('HDEL', KEYS[5], p[6], 1000)
each('HSET', KEYS[2], p[7], 2000)
each('HSET', KEYS[3], p[8], 2000)
each('ZADD', KEYS[6], p[9], 2000)
each('ZREM', KEYS[6], p[10], 1000)
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


class CommitFenced(RuntimeError):
    """A commit found another writer's commit in its place: the partition moved to another
    processor (or Redis lost commits it had acknowledged). Nothing of the call was applied to
    those partitions; the writer must reload them from Redis."""

    def __init__(self, partitions: list[int]) -> None:
        super().__init__(f"partitions {partitions}: another writer committed first; reload them")
        self.partitions = partitions


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

    async def claim(self, partition: int, owner: str) -> int:
        """Make `owner` the partition's only writer (commits of any earlier owner are fenced
        from now on); returns the number of the last commit stored."""
        keys = self.keys(partition)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.meta, "owner", owner)
            pipe.hget(keys.meta, "seq")
            _, seq = await pipe.execute()
        return int(seq or 0)

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
        partitions = [p for p, w in writes.items() if not w.is_empty() or w.seq is not None]
        calls = [self._commit_args(p, writes[p]) for p in partitions]
        if not calls:
            return
        results = await through_slot_moves().call_with_retry(
            lambda: self._run_loaded(calls), no_cleanup)
        fenced = [p for p, result in zip(partitions, results, strict=True) if int(result) < 0]
        if fenced:
            raise CommitFenced(fenced)

    async def _run_loaded(self, calls: list[tuple[list[str], list[bytes]]]) -> list[Any]:
        try:
            return await self._run_commits(calls)
        except NoScriptError:  # a Redis Cluster pipeline does not load scripts by itself
            if isinstance(self.redis, RedisCluster):
                await self.redis.execute_command("SCRIPT", "LOAD", _COMMIT_LUA,
                                                 target_nodes=RedisCluster.ALL_NODES)
            else:
                await self.redis.script_load(_COMMIT_LUA)
            return await self._run_commits(calls)

    async def _run_commits(self, calls: list[tuple[list[str], list[bytes]]]) -> list[Any]:
        if len(calls) == 1:
            return [await self._commit_script(keys=calls[0][0], args=calls[0][1])]
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                await self._commit_script(keys=keys, args=args, client=pipe)
            results: list[Any] = await pipe.execute()
        return results

    def _commit_args(self, partition: int, write: PartitionWrite) -> tuple[list[str], list[bytes]]:
        keys = self.keys(partition)
        names = [keys.state, keys.offsets, keys.meta, keys.masks, keys.counts, keys.timers]
        masks: list[Any] = []
        unmasked = list(write.deleted)
        for customer_id, mask in write.masks.items():
            if mask:
                masks.append(customer_id)
                masks.append(_lua_bytes(mask_bytes(mask)))
            else:
                unmasked.append(customer_id)
        counts: list[Any] = []
        for segment_id, delta in write.counts.items():
            if delta and segment_id not in write.drop_segments:
                counts.append(segment_id)
                counts.append(str(delta))
        timers: list[Any] = []
        untimed: list[str] = []
        for customer_id, at in write.timers.items():
            if at is None:
                untimed.append(customer_id)
            else:
                timers.append(str(at))
                timers.append(customer_id)
        payload = _PAYLOAD.encode((
            _flat(write.states), list(write.deleted), masks, unmasked, counts,
            list(write.drop_segments), _flat(write.offsets), _flat(write.meta), timers, untimed,
        ))
        if write.seq is None:
            return names, [payload]
        return names, [payload, str(write.seq).encode(), write.owner.encode()]

    async def wipe_partition(self, partition: int) -> None:
        """Delete every key of a partition."""
        async for key in self.redis.scan_iter(match=f"{self.keys(partition).tag}:*", count=1000):
            await self.redis.delete(key)

    async def member_count(self, partitions: int, segment_id: str) -> int:
        return (await self.member_counts(partitions, [segment_id]))[segment_id]

    async def member_counts(self, partitions: int, segment_ids: list[str]) -> dict[str, int]:
        """Members of each segment, summed over partitions, in one round trip."""
        if not segment_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.hmget(self.keys(p).counts, segment_ids)
            rows: list[list[bytes | None]] = await pipe.execute()
        return {s: sum(int(row[i] or 0) for row in rows) for i, s in enumerate(segment_ids)}

    async def scan_members(
        self, partition: int, slot: int, cursor: int, count: int
    ) -> tuple[int, list[str]]:
        """One HSCAN step over a partition's masks: the customers whose bit `slot` is set."""
        next_cursor, raw = await self.redis.hscan(self.keys(partition).masks, cursor, count=count)
        return int(next_cursor), _with_bit(raw, slot)

    async def members(self, partition: int, slot: int) -> list[str]:
        """Every member of the segment in slot `slot` in one partition (a full scan)."""
        found: list[str] = []
        cursor = 0
        while True:
            cursor, batch = await self.scan_members(partition, slot, cursor, 2000)
            found.extend(batch)
            if cursor == 0:
                return found

    async def segment_emails(self, partitions: int, slot: int) -> SegmentEmails:
        """Emails of every member of the segment in `slot`, over all partitions (a full scan:
        provider reconcile), and the members who have none."""
        emails: set[str] = set()
        missing: list[str] = []
        for partition in range(partitions):
            ids = sorted(await self.members(partition, slot))
            blobs = await self.load_states(partition, ids)
            for customer_id, blob in zip(ids, blobs, strict=True):
                email = decode_state(blob).email if blob is not None else None
                if email:
                    emails.add(email)
                else:
                    missing.append(customer_id)
        return SegmentEmails(emails, missing)

    async def backfilled(self, partitions: int) -> list[frozenset[str]]:
        """Per partition, the `id@version` entries of the definitions its memberships match
        (its backfill to them is done)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.hget(self.keys(p).meta, "definitions")
            raw: list[bytes | None] = await pipe.execute()
        return [frozenset(r.decode().split(",")) if r else frozenset() for r in raw]

    async def load_state(self, partition: int, customer_id: str) -> bytes | None:
        blob: bytes | None = await self.redis.hget(self.keys(partition).state, customer_id)
        return blob

    async def holds_states(self, partition: int) -> bool:
        return bool(await self.redis.exists(self.keys(partition).state))

    async def state_count(self, partitions: int) -> int:
        """Stored customer states over all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.hlen(self.keys(p).state)
            counts: list[int] = await pipe.execute()
        return sum(counts)

    async def due_timers(
        self, partitions: list[int], now_ms: int, limit: int
    ) -> dict[int, list[tuple[str, int]]]:
        """Per partition, up to `limit` customers whose timer is due at `now_ms`, earliest
        first, with their due instant: one round trip for all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in partitions:
                pipe.zrangebyscore(self.keys(p).timers, "-inf", now_ms, start=0, num=limit,
                                   withscores=True)
            rows: list[list[tuple[bytes, float]]] = await pipe.execute()
        return {p: [(c.decode(), int(at)) for c, at in row]
                for p, row in zip(partitions, rows, strict=True) if row}

    async def timer_of(self, partition: int, customer_id: str) -> int | None:
        """The customer's next re-evaluation with time alone, if one is scheduled."""
        at: float | None = await self.redis.zscore(self.keys(partition).timers, customer_id)
        return None if at is None else int(at)

    async def timer_count(self, partitions: int) -> int:
        """Scheduled re-evaluations over all partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.zcard(self.keys(p).timers)
            counts: list[int] = await pipe.execute()
        return sum(counts)

    async def global_meta(self) -> Mapping[str, str]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(f"{self.prefix}:meta")
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def set_global_meta(self, values: Mapping[str, str]) -> None:
        await self.redis.hset(f"{self.prefix}:meta", mapping=dict(values))


def _with_bit(masks: Mapping[bytes, bytes], slot: int) -> list[str]:
    byte, bit = divmod(slot, 8)
    return [customer.decode() for customer, mask in masks.items()
            if len(mask) > byte and mask[byte] >> bit & 1]
