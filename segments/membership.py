"""Membership change records (contract section 7) and their deterministic ids.

A membership event's `event_id` is derived from what caused it (the input event, or the
backfill of a segment version, or a time flip), so re-emitting the same change after a crash
gives the same id and consumers can drop the duplicate.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import orjson

ADDED = "segment.member_added"
REMOVED = "segment.member_removed"
UPDATED = "segment.member_updated"
"""The email of a current member was set or changed: outside the added/removed alternation."""
KINDS: Final = (ADDED, REMOVED, UPDATED)


class InvalidMembership(ValueError):
    """A record on the membership topic that is not a valid change (contract section 7)."""


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One membership event as a consumer reads it."""

    event_id: str
    segment_id: str
    customer_id: str
    email: str | None
    """Stripped; None when the record has none, or only blanks."""
    kind: str
    """`ADDED`, `REMOVED` or `UPDATED`."""
    previous_email: str | None = None
    """`UPDATED` only: the email before (None: the member had none)."""

    @property
    def member(self) -> bool:
        """Whether the customer is in the segment after this change (an update is of a
        member)."""
        return self.kind != REMOVED


def parse_membership(value: bytes) -> MembershipChange:
    """Decode a membership record, or raise `InvalidMembership` saying what is wrong."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidMembership(f"invalid JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("type") not in KINDS:
        raise InvalidMembership(
            "not a membership change (type must be member_added, member_removed or "
            "member_updated)")
    for name in ("event_id", "segment_id", "customer_id"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidMembership(f"`{name}` is missing or not a string")
    return MembershipChange(body["event_id"], body["segment_id"], body["customer_id"],
                            _email(body.get("email")), body["type"],
                            _email(body.get("previous_email")))


def _email(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


_BLAKE2B_128: Final = hashlib.blake2b(digest_size=16)


def change_id(cause: str, segment_id: str, version: int, customer_id: str, kind: str) -> str:
    """Deterministic id of one membership change: same cause and change, same id.

    The hex blake2b-128 of the parts joined by U+001F (fed in three pieces, which hashes the
    same as the joined text); consumers drop duplicates by this id across restarts and upgrades,
    so the formula may never change: `test_change_ids_keep_their_formula` pins it.
    """
    hasher = _cause_hasher(cause)
    hasher.update(_segment_part(segment_id, version))
    hasher.update(_customer_part(customer_id, kind))
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


def email_update_record(
    *,
    segment_id: str,
    version: int,
    customer_id: str,
    email: str | None,
    previous_email: str | None,
    changed_at: str,
    cause_event_id: str,
) -> bytes:
    """A `segment.member_updated`: the email of a current member was set or changed.

    Its id derives from the causing event like an added or removed one's; it takes no part in
    the added/removed alternation, so a consumer tracking membership only may ignore it.
    """
    return orjson.dumps({
        "event_id": change_id(cause_event_id, segment_id, version, customer_id, UPDATED),
        "type": UPDATED,
        "segment_id": segment_id,
        "segment_version": version,
        "customer_id": customer_id,
        "email": email,
        "previous_email": previous_email,
        "changed_at": changed_at,
        "reason": "event",
        "cause_event_id": cause_event_id,
    })


class SegmentRecords:
    """Membership records of one segment version, byte-identical to `membership_record`.

    A cold start writes several records per event; the parts that depend only on the segment,
    the batch's `changed_at` and the reason are JSON-encoded once, the customer's once per event
    (`who`, `cause_tail`), and so is the id's hash input: blake2b is fed its parts in turn, so
    the cause's part is hashed once per event (`cause_prefix`), the segment's once per batch and
    the customer's pair of suffixes once per event (`customer_suffixes`). A record then costs
    one hasher copy, two updates and one join (docs/design.md, "Records built from prepared
    parts").
    """

    __slots__ = ("_heads", "_mid", "_reason_prefix", "_tail", "reason", "segment_id", "version")

    def __init__(self, segment_id: str, version: int, changed_at: str, reason: str) -> None:
        self.segment_id = segment_id
        self.version = version
        self.reason = reason
        common = (b',"segment_id":' + orjson.dumps(segment_id)
                  + b',"segment_version":' + orjson.dumps(version) + b',"customer_id":')
        # indexed by `added`: False (0) removed, True (1) added
        self._heads = tuple(b'","type":' + orjson.dumps(k) + common for k in (REMOVED, ADDED))
        self._tail = (b',"changed_at":' + orjson.dumps(changed_at)
                      + b',"reason":' + orjson.dumps(reason))
        self._mid = _segment_part(segment_id, version)
        self._reason_prefix = _cause_hasher(reason)

    @staticmethod
    def who(customer_id: str, email: str | None) -> bytes:
        return orjson.dumps(customer_id) + b',"email":' + orjson.dumps(email)

    @staticmethod
    def cause_tail(cause_event_id: str | None) -> bytes:
        if cause_event_id is None:
            return b"}"
        return b',"cause_event_id":' + orjson.dumps(cause_event_id) + b"}"

    @staticmethod
    def cause_prefix(cause_event_id: str | None) -> hashlib.blake2b | None:
        """The id hasher fed with the causing event's part; None: the records' reason is the
        cause (backfill, deletions), whose hasher each `SegmentRecords` prepared."""
        return _cause_hasher(cause_event_id) if cause_event_id else None

    @staticmethod
    def customer_suffixes(customer_id: str) -> tuple[bytes, bytes]:
        """The id's last parts for a removal and for an addition of this customer."""
        return (_customer_part(customer_id, REMOVED), _customer_part(customer_id, ADDED))

    def record(self, added: bool, cause_prefix: hashlib.blake2b | None,
               suffixes: tuple[bytes, bytes], who: bytes, cause_tail: bytes) -> bytes:
        hasher = (self._reason_prefix if cause_prefix is None else cause_prefix).copy()
        hasher.update(self._mid)
        hasher.update(suffixes[added])
        return b"".join((b'{"event_id":"', hexlify(hasher.digest()), self._heads[added], who,
                         self._tail, cause_tail))


# The id's input, `cause␟segment_id␟version␟customer_id␟kind`, in the three parts that change at
# different rates; `change_id` and `SegmentRecords` both feed them to blake2b in this order.


def _cause_hasher(cause: str) -> hashlib.blake2b:
    hasher = _BLAKE2B_128.copy()
    hasher.update(f"{cause}\x1f".encode())
    return hasher


def _segment_part(segment_id: str, version: int) -> bytes:
    return f"{segment_id}\x1f{version}\x1f".encode()


def _customer_part(customer_id: str, kind: str) -> bytes:
    return f"{customer_id}\x1f{kind}".encode()
