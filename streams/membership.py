"""Membership change records (contract section 7) and dead-letter records.

A membership event's `event_id` is derived from what caused it (the input event, or the
backfill of a segment version, or a time flip), so re-emitting the same change after a crash
gives the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final

import orjson

ADDED = "segment.member_added"
REMOVED = "segment.member_removed"


_BLAKE2B_128: Final = hashlib.blake2b(digest_size=16)


def change_id(cause: str, segment_id: str, version: int, customer_id: str, kind: str) -> str:
    """Deterministic id of one membership change: same cause and change, same id.

    The hex blake2b-128 of the parts joined by U+001F; consumers drop duplicates by this id
    across restarts and upgrades, so the formula may never change. A copy of a prepared hasher
    is cheaper than a new one (a cold start writes about three changes per event).
    """
    hasher = _BLAKE2B_128.copy()
    hasher.update(f"{cause}\x1f{segment_id}\x1f{version}\x1f{customer_id}\x1f{kind}".encode())
    return hasher.hexdigest()


def iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def membership_record(
    *,
    added: bool,
    segment_id: str,
    version: int,
    customer_id: str,
    email: str | None,
    changed_at: str,
    reason: str,
    cause: str,
    cause_event_id: str | None,
) -> bytes:
    kind = ADDED if added else REMOVED
    record: dict[str, object] = {
        "event_id": change_id(cause, segment_id, version, customer_id, kind),
        "type": kind,
        "segment_id": segment_id,
        "segment_version": version,
        "customer_id": customer_id,
        "email": email,
        "changed_at": changed_at,
        "reason": reason,
    }
    if cause_event_id is not None:
        record["cause_event_id"] = cause_event_id
    return orjson.dumps(record)


class SegmentRecords:
    """Membership records of one segment version, byte-identical to `membership_record`.

    A cold start writes several records per event; the parts that depend only on the segment,
    the batch's `changed_at` and the reason are JSON-encoded once, the customer's once per event
    (`who`, `cause_tail`), so a record costs its id and one join.
    """

    __slots__ = ("_heads", "_tail", "reason", "segment_id", "version")

    def __init__(self, segment_id: str, version: int, changed_at: str, reason: str) -> None:
        self.segment_id = segment_id
        self.version = version
        self.reason = reason
        common = (b',"segment_id":' + orjson.dumps(segment_id)
                  + b',"segment_version":' + orjson.dumps(version) + b',"customer_id":')
        self._heads = {k: b'","type":' + orjson.dumps(k) + common for k in (ADDED, REMOVED)}
        self._tail = (b',"changed_at":' + orjson.dumps(changed_at)
                      + b',"reason":' + orjson.dumps(reason))

    @staticmethod
    def who(customer_id: str, email: str | None) -> bytes:
        return orjson.dumps(customer_id) + b',"email":' + orjson.dumps(email)

    @staticmethod
    def cause_tail(cause_event_id: str | None) -> bytes:
        if cause_event_id is None:
            return b"}"
        return b',"cause_event_id":' + orjson.dumps(cause_event_id) + b"}"

    def record(self, added: bool, customer_id: str, cause: str, who: bytes,
               cause_tail: bytes) -> bytes:
        kind = ADDED if added else REMOVED
        event_id = change_id(cause, self.segment_id, self.version, customer_id, kind)
        return b"".join((b'{"event_id":"', event_id.encode(), self._heads[kind], who,
                         self._tail, cause_tail))


def dlq_headers(
    topic: str, partition: int, offset: int, code: str, reason: str, stage: str = "processor"
) -> list[tuple[str, bytes]]:
    """Kafka Connect's `__connect.errors.*` header convention, plus our own short code."""
    return [
        ("__connect.errors.topic", topic.encode()),
        ("__connect.errors.partition", str(partition).encode()),
        ("__connect.errors.offset", str(offset).encode()),
        ("__connect.errors.exception.class.name", code.encode()),
        ("__connect.errors.exception.message", reason.encode()),
        ("segstream.error.code", code.encode()),
        ("segstream.error.stage", stage.encode()),
    ]
