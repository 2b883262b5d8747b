"""Membership change records (contract section 7) and dead-letter records.

A membership event's `event_id` is derived from what caused it (the input event, or the
backfill of a segment version, or a time flip), so re-emitting the same change after a crash
gives the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson

ADDED = "segment.member_added"
REMOVED = "segment.member_removed"


def change_id(cause: str, segment_id: str, version: int, customer_id: str, kind: str) -> str:
    """Deterministic id of one membership change: same cause and change, same id."""
    text = f"{cause}\x1f{segment_id}\x1f{version}\x1f{customer_id}\x1f{kind}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


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
