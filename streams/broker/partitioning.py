"""Which partition owns a customer: the same answer as Java's and aiokafka's default partitioner.

Every customer's state lives with exactly one partition number `p` of the co-partitioned input
topics. Producers may hash keys with another partitioner (librdkafka's CRC32), so the processor
checks each event against `owner_partition` and forwards strays to the repartition topic.
"""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=1 << 18)
def owner_partition(customer_id: str, partitions: int) -> int:
    """Partition of `customer_id` among `partitions`, as murmur2 (Java client default) places it."""
    hashed: int = murmur2(customer_id.encode())
    return (hashed & 0x7FFFFFFF) % partitions
