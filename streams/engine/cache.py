"""Decoded customer states of the owned partitions, kept in memory between batches.

The processor owning partition p is the only writer of p's states, so its cache is coherent:
a cached state is always at least as new as Redis's. A cached `None` means "known to have no
state" (never seen, or deleted). States are loaded with one HMGET per partition and batch, and
the cache is trimmed to its size after each batch, oldest first, never dropping a customer whose
newest state is not committed yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from segments.features import FeatureState, decode_state
from streams.storage.state import StateStore

PartitionStates = dict[str, FeatureState | None]


class StateCache:
    """Per owned partition: customer id -> decoded state (or None)."""

    def __init__(self, store: StateStore, size: int) -> None:
        self._store = store
        self.size = size
        self.partitions: dict[int, PartitionStates] = {}

    def own(self, partition: int) -> None:
        self.partitions.setdefault(partition, {})

    def release(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is cached of `partitions` (still owned): Redis is read again."""
        for p in partitions:
            if p in self.partitions:
                self.partitions[p].clear()

    def of(self, partition: int) -> PartitionStates:
        return self.partitions[partition]

    async def load(self, partition: int, customer_ids: set[str]) -> None:
        """Read the stored states of `customer_ids` (none of them cached) into the cache."""
        if not customer_ids:
            return
        ids = list(customer_ids)
        blobs = await self._store.load_states(partition, ids)
        cache = self.partitions[partition]
        for customer_id, blob in zip(ids, blobs, strict=True):
            cache[customer_id] = decode_state(blob) if blob is not None else None

    def trim(self, uncommitted: Callable[[], set[str]]) -> None:
        """Trim each partition to its share of `size`, oldest first, keeping the customers
        `uncommitted()` names (asked only when some partition is over its share)."""
        if not self.partitions:
            return
        share = max(1, self.size // len(self.partitions))
        if all(len(cache) <= share for cache in self.partitions.values()):
            return
        keep = uncommitted()
        for cache in self.partitions.values():
            excess = len(cache) - share
            if excess <= 0:
                continue
            for customer_id in list(cache):
                if excess <= 0:
                    break
                if customer_id not in keep:
                    del cache[customer_id]
                    excess -= 1
