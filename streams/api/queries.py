"""Reads over the processor's Redis state: member pages, backfill progress, previews.

All of them touch a bounded amount of data per request: member pages HSCAN the membership masks
at most `MAX_SCAN_CALLS` steps, previews HSCAN at most `PREVIEW_MAX_STATES` states.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from segments.definitions import SegmentDefinition
from segments.evaluator import SegmentIndex
from segments.features import decode_state
from streams.api.errors import ApiError
from streams.storage.state import StateStore

SCAN_COUNT: Final = 500
MAX_SCAN_CALLS: Final = 200
PREVIEW_MAX_STATES: Final = 20_000
PREVIEW_SCAN_COUNT: Final = 1000
_CURSOR: Final = re.compile(r"^(\d{1,6})\.(\d{1,20})\.(\d{1,6})$")


@dataclass(frozen=True)
class MemberCursor:
    """Where a member listing resumes: partition, HSCAN cursor in it, members of that HSCAN
    step already returned (a step can return more than one page holds)."""

    partition: int = 0
    scan: int = 0
    skip: int = 0

    def encode(self) -> str:
        return f"{self.partition}.{self.scan}.{self.skip}"

    @classmethod
    def decode(cls, text: str | None) -> MemberCursor:
        if not text:
            return cls()
        match = _CURSOR.match(text)
        if match is None:
            raise ApiError(400, "invalid_cursor", "the cursor is not one this API handed out",
                           [{"path": "cursor", "message": "use next_cursor of the last page"}])
        return cls(*(int(g) for g in match.groups()))


async def member_page(
    states: StateStore, partitions: int, slot: int, cursor: MemberCursor, limit: int
) -> tuple[list[str], MemberCursor | None]:
    """Up to `limit` ids of the members of the segment in `slot` from `cursor` on, and the
    cursor after them (None at the end). A page may be short: one request scans at most
    `MAX_SCAN_CALLS` steps of the partitions' membership masks.

    Each HSCAN step is sorted so that `skip` means the same members when the step is repeated.
    A full pass returns every member present throughout it once (HSCAN's guarantee); members
    added or removed during the pass may or may not appear.
    """
    found: list[str] = []
    p, scan, skip = cursor.partition, cursor.scan, cursor.skip
    for _ in range(MAX_SCAN_CALLS):
        if p >= partitions or len(found) >= limit:
            break
        next_scan, batch = await states.scan_members(p, slot, scan, SCAN_COUNT)
        rest = sorted(batch)[skip:]
        room = limit - len(found)
        if len(rest) > room:
            found.extend(rest[:room])
            return found, MemberCursor(p, scan, skip + room)
        found.extend(rest)
        skip = 0
        p, scan = (p + 1, 0) if next_scan == 0 else (p, next_scan)
    return found, (MemberCursor(p, scan, 0) if p < partitions else None)


async def progress(states: StateStore, partitions: int, definition: SegmentDefinition) -> float:
    """Share of partitions that have backfilled this version of the segment."""
    entry = f"{definition.id}@{definition.version}"
    backfilled = await states.backfilled(partitions)
    return sum(1 for done in backfilled if entry in done) / partitions


@dataclass(frozen=True)
class Preview:
    count: int
    sample: list[str]
    scanned: int
    total: int
    complete: bool

    def as_json(self) -> dict[str, Any]:
        complete = self.complete
        estimate = self.count if complete or not self.scanned else round(
            self.count * self.total / self.scanned)
        body: dict[str, Any] = {
            "count": self.count, "sample": self.sample, "scanned": self.scanned,
            "customers": self.total, "complete": complete, "estimated_count": estimate,
        }
        if not complete:
            body["note"] = (f"only {self.scanned} of {self.total} stored customers were "
                            "evaluated; count is over those, estimated_count extrapolates")
        return body


async def preview(
    states: StateStore, partitions: int, index: SegmentIndex, segment_id: str,
    now_ms: int, sample_size: int,
) -> Preview:
    """Evaluate `segment_id` of `index` over stored states, at most PREVIEW_MAX_STATES of them."""
    bit = 1 << index.by_id[segment_id].slot
    count, scanned, finished = 0, 0, 0
    sample: list[str] = []
    for p in range(partitions):
        cursor = 0
        while scanned < PREVIEW_MAX_STATES:
            cursor, blobs = await states.scan_states(p, cursor, PREVIEW_SCAN_COUNT)
            scanned += len(blobs)
            for customer_id in _matching(index, blobs, bit, now_ms):
                count += 1
                if len(sample) < sample_size:
                    sample.append(customer_id)
            if cursor == 0:
                finished += 1
                break
    total = await states.state_count(partitions)
    return Preview(count, sample, scanned, total, finished == partitions)


def _matching(
    index: SegmentIndex, blobs: Mapping[str, bytes], bit: int, now_ms: int
) -> list[str]:
    return [c for c, blob in blobs.items() if index.evaluate_all(decode_state(blob), now_ms) & bit]
