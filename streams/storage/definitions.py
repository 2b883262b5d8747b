"""Segment definitions stored durably in Redis, versioned, with a revision counter processors poll.

    <prefix>:{defs}        hash  segment_id -> JSON {id, version, slot, body, updated_at}
    <prefix>:{defs}:slot   counter handing out membership bit positions (never reused)
    <prefix>:{defs}:rev    counter bumped on every change; processors reload when it moves
    <prefix>:{defs}:tombs  hash  slot -> JSON {id, version} of deleted segments, so partitions
                           can emit `segment_deleted` removals for bits they still hold

The four keys share the hash tag `{defs}`: a change watches and writes them in one transaction,
which Redis Cluster allows only within one slot. Keys written before they had the tag
(`<prefix>:defs`, ...) are renamed on first use (`migrate`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from segments.definitions import SegmentDefinition, check_graph, parse_definition
from streams.storage.client import no_cleanup, through_slot_moves


@dataclass(frozen=True)
class DefinitionSet:
    """A consistent snapshot: live definitions, tombstones of deleted ones, and the revision."""

    revision: int
    live: Mapping[str, SegmentDefinition]
    tombstones: Mapping[int, tuple[str, int]]

    def fingerprint(self) -> str:
        """What a partition records once its memberships match this set."""
        parts = sorted(f"{d.id}@{d.version}" for d in self.live.values())
        return ",".join(parts)


class SegmentExists(KeyError):
    """`create` of an id that is already a segment."""


class SegmentNotFound(KeyError):
    """`replace` of an id that is no segment."""


class DefinitionStore:
    """Create, replace, delete and load segment definitions."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis: Any = redis  # the async client; redis-py types commands as sync-or-async
        self.key = f"{prefix}:{{defs}}"
        self.slot_key = f"{prefix}:{{defs}}:slot"
        self.rev_key = f"{prefix}:{{defs}}:rev"
        self.tomb_key = f"{prefix}:{{defs}}:tombs"
        self._legacy = {f"{prefix}:defs": self.key, f"{prefix}:defs:slot": self.slot_key,
                        f"{prefix}:defs:rev": self.rev_key, f"{prefix}:defs:tombs": self.tomb_key}

    async def migrate(self) -> bool:
        """Rename the untagged keys of an older layout, if any and if the tagged ones do not
        exist yet (a single Redis: Redis Cluster never had the untagged layout); whether it
        renamed anything."""
        if await self.redis.exists(self.key, self.rev_key):
            return False
        renamed = False
        for old, new in self._legacy.items():
            if await self.redis.exists(old):
                await self.redis.rename(old, new)
                renamed = True
        return renamed

    async def revision(self) -> int:
        raw = await self.redis.get(self.rev_key)
        return int(raw or 0)

    async def load(self) -> DefinitionSet:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(self.rev_key).hgetall(self.key).hgetall(self.tomb_key)
            rev, raw_defs, raw_tombs = await pipe.execute()
        live = {d.id: d for d in (_decode(v) for v in raw_defs.values())}
        tombs = {int(k): _tomb(v) for k, v in raw_tombs.items()}
        return DefinitionSet(int(rev or 0), live, tombs)

    async def get(self, segment_id: str) -> SegmentDefinition | None:
        raw = await self.redis.hget(self.key, segment_id)
        return None if raw is None else _decode(raw)

    async def put(self, segment_id: str, body: Any) -> SegmentDefinition:
        """Create or replace; validates the definition and the segment graph (no cycles)."""
        return await self._write(segment_id, body, None)

    async def create(self, segment_id: str, body: Any) -> SegmentDefinition:
        """Create only: `SegmentExists` when the id is taken (checked in the same transaction)."""
        return await self._write(segment_id, body, False)

    async def replace(self, segment_id: str, body: Any) -> SegmentDefinition:
        """Replace only: `SegmentNotFound` when there is no segment with this id."""
        return await self._write(segment_id, body, True)

    async def _write(self, segment_id: str, body: Any, exists: bool | None) -> SegmentDefinition:
        while True:
            try:
                return await through_slot_moves().call_with_retry(
                    lambda: self._put_once(segment_id, body, exists), no_cleanup)
            except WatchError:
                continue

    async def _put_once(
        self, segment_id: str, body: Any, exists: bool | None = None
    ) -> SegmentDefinition:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key, self.tomb_key)
            current = await _current_of(pipe, self.key)
            old = current.get(segment_id)
            if exists is False and old is not None:
                raise SegmentExists(segment_id)
            if exists is True and old is None:
                raise SegmentNotFound(segment_id)
            if old is not None and _canonical(old.raw) == _canonical(body):
                return old
            slot, version = await self._slot_and_version(pipe, segment_id, old)
            definition = parse_definition(body, segment_id=segment_id, version=version, slot=slot)
            check_graph({**current, segment_id: definition})
            pipe.multi()
            stamp = time.time()
            pipe.hset(self.key, segment_id, _encode(definition, stamp))
            if old is None:
                pipe.hdel(self.tomb_key, str(slot))
            pipe.incr(self.rev_key)
            await pipe.execute()
            return dataclasses.replace(definition, updated_ms=int(stamp * 1000))

    async def _slot_and_version(
        self, pipe: Any, segment_id: str, old: SegmentDefinition | None
    ) -> tuple[int, int]:
        """A replaced segment keeps its slot; a re-created id takes back its deleted slot.

        Re-creation continues the version count, so `id@version` never names two definitions
        (partitions record what they backfilled to by it), and the old bits and counts mean
        the same segment again: the backfill emits only the difference.
        """
        if old is not None:
            return old.slot, old.version + 1
        raw_tombs: dict[bytes, bytes] = await pipe.hgetall(self.tomb_key)
        for slot, raw in raw_tombs.items():
            tomb_id, tomb_version = _tomb(raw)
            if tomb_id == segment_id:
                return int(slot), tomb_version + 1
        return int(await pipe.incr(self.slot_key)) - 1, 1

    async def delete(self, segment_id: str) -> SegmentDefinition | None:
        while True:
            try:
                return await self._delete_once(segment_id)
            except WatchError:
                continue

    async def _delete_once(self, segment_id: str) -> SegmentDefinition | None:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key)
            current = await _current_of(pipe, self.key)
            old = current.pop(segment_id, None)
            if old is None:
                return None
            check_graph(current)
            pipe.multi()
            pipe.hdel(self.key, segment_id)
            pipe.hset(self.tomb_key, str(old.slot), orjson.dumps([old.id, old.version]))
            pipe.incr(self.rev_key)
            await pipe.execute()
            return old


async def _current_of(pipe: Any, key: str) -> dict[str, SegmentDefinition]:
    raw: dict[bytes, bytes] = await pipe.hgetall(key)
    return {d.id: d for d in (_decode(v) for v in raw.values())}


def _canonical(body: Any) -> Any:
    return orjson.loads(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _encode(d: SegmentDefinition, stamp: float) -> bytes:
    record = {"id": d.id, "version": d.version, "slot": d.slot, "body": _canonical(d.raw),
              "updated_at": stamp}
    return orjson.dumps(record)


def _decode(raw: bytes) -> SegmentDefinition:
    record = orjson.loads(raw)
    definition = parse_definition(
        record["body"], segment_id=record["id"], version=record["version"], slot=record["slot"]
    )
    updated = record.get("updated_at")
    if not isinstance(updated, int | float):
        return definition
    return dataclasses.replace(definition, updated_ms=int(updated * 1000))


def _tomb(raw: bytes) -> tuple[str, int]:
    segment_id, version = orjson.loads(raw)
    return str(segment_id), int(version)


class SegmentsFileError(ValueError):
    """A `--segments FILE` that cannot be loaded; the message says where and why."""


async def apply_segments_file(store: DefinitionStore, path: str) -> list[SegmentDefinition]:
    """Create or replace every definition in a JSON file holding a list of `{"id", ...}`."""
    from pathlib import Path

    from segments.definitions import DefinitionError

    try:
        entries = orjson.loads(await asyncio.to_thread(Path(path).read_bytes))
    except (OSError, orjson.JSONDecodeError) as exc:
        raise SegmentsFileError(f"{path}: cannot read segment definitions: {exc}") from None
    if not isinstance(entries, list):
        raise SegmentsFileError(f"{path}: expected a JSON list of segment definitions")
    applied = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise SegmentsFileError(f"{path}: [{n}] needs a non-empty string \"id\"")
        body = {k: v for k, v in entry.items() if k != "id"}
        try:
            applied.append(await store.put(entry["id"], body))
        except DefinitionError as exc:
            problems = "; ".join(f"{d['path']}: {d['message']}" for d in exc.details)
            raise SegmentsFileError(f"{path}: segment {entry['id']!r}: {problems}") from None
    return applied
