"""Membership changes into the output: one record per flipped segment bit, counts kept exact.

The records of one segment version, reason and batch share their JSON parts and id prefix
(`segments.membership.SegmentRecords`); a customer's own parts are made once per change of mask.
Each record goes straight into the membership topic's Kafka batch for the customer's partition.
"""

from __future__ import annotations

from typing import Any

from segments.definitions import SegmentDefinition
from segments.features import FeatureState
from segments.membership import SegmentRecords, email_update_record, iso_ms
from streams.broker.topics import TopicNames
from streams.engine.output import BatchProducer
from streams.engine.stats import EngineStats
from streams.storage.definitions import DefinitionSet
from streams.storage.state import PartitionWrite

_UNKNOWN: Any = object()  # a slot whose records this batch has not looked up yet


class MembershipSink:
    """Emits the membership records of mask changes; knows nothing of how they were found."""

    def __init__(self, topics: TopicNames, output: BatchProducer, stats: EngineStats) -> None:
        self._topic = topics.membership
        self._output = output
        self._stats = stats
        self._by_slot: dict[int, SegmentDefinition] = {}
        self._tombstones: dict[int, tuple[str, int]] = {}
        self._records: dict[str, dict[int, SegmentRecords | None]] = {}
        """reason -> slot -> the records of that segment in this batch"""
        self._changed_at = ""
        self._added: dict[SegmentRecords, int] = {}
        self._removed: dict[SegmentRecords, int] = {}
        """Changes emitted since the last `fold`, by the records (segment, reason) they used."""

    def set_definitions(self, definitions: DefinitionSet) -> None:
        self._by_slot = {d.slot: d for d in definitions.live.values()}
        self._tombstones = dict(definitions.tombstones)
        self._records = {}

    def new_batch(self, now_ms: int) -> None:
        """The batch's `changed_at`; records prepared for the previous batch go."""
        self.fold()
        self._changed_at = iso_ms(now_ms)
        self._records = {}

    def fold(self) -> None:
        """Add the changes emitted since the last call to the stats' count by segment and
        reason (once per batch: `emit` only counts per records object)."""
        changes = self._stats.changes
        for kind, tally in (("added", self._added), ("removed", self._removed)):
            for records, count in tally.items():
                key = (records.segment_id, records.reason, kind)
                changes[key] = changes.get(key, 0) + count
            tally.clear()

    def emit(
        self,
        customer_id: str,
        state: FeatureState,
        new_mask: int,
        reason: str,
        write: PartitionWrite,
        cause_event_id: str | None,
        cause: str | None = None,
    ) -> None:
        """Queue one record per bit flipped from `state.segments_mask` to `new_mask`, move the
        member counts in `write`, and set the mask (in the state and the write).

        The records' ids derive from `cause` (a timer's `time@<due ms>`), else from the causing
        event, else from the reason (backfill, deletions): the same flip, the same id.

        The per-change work is a lookup, the record's join, its append to the Kafka batch and a
        count: a cold start flips several segments per event.
        """
        diff = state.segments_mask ^ new_mask
        state.segments_mask = new_mask
        by_slot = self._records.get(reason)
        if by_slot is None:
            by_slot = self._records[reason] = {}
        output = self._output
        sink = output.pending(self._topic, output.partition_of(self._topic, customer_id))
        key = customer_id.encode()
        who = SegmentRecords.who(customer_id, state.email)
        cause_tail = SegmentRecords.cause_tail(cause_event_id)
        prefix = SegmentRecords.cause_prefix(cause or cause_event_id)
        suffixes = SegmentRecords.customer_suffixes(customer_id)
        counts = write.counts
        tally_added, tally_removed = self._added, self._removed
        added = removed = 0
        while diff:
            low = diff & -diff
            diff ^= low
            slot = low.bit_length() - 1
            records = by_slot.get(slot, _UNKNOWN)
            if records is _UNKNOWN:
                records = by_slot[slot] = self._segment_records(slot, reason)
            if records is None:
                continue
            segment_id = records.segment_id
            if new_mask & low:
                sink.add(key, records.record(True, prefix, suffixes, who, cause_tail))
                counts[segment_id] = counts.get(segment_id, 0) + 1
                tally_added[records] = tally_added.get(records, 0) + 1
                added += 1
            else:
                sink.add(key, records.record(False, prefix, suffixes, who, cause_tail))
                counts[segment_id] = counts.get(segment_id, 0) - 1
                tally_removed[records] = tally_removed.get(records, 0) + 1
                removed += 1
        self._stats.added += added
        self._stats.removed += removed
        write.masks[customer_id] = new_mask

    def email_updated(
        self, customer_id: str, mask: int, email: str | None, previous_email: str | None,
        cause_event_id: str,
    ) -> None:
        """Queue a `segment.member_updated` for each live segment in `mask` (the customer was
        and stays a member): its email was set or changed by the event `cause_event_id`."""
        output = self._output
        sink = output.pending(self._topic, output.partition_of(self._topic, customer_id))
        key = customer_id.encode()
        while mask:
            low = mask & -mask
            mask ^= low
            definition = self._by_slot.get(low.bit_length() - 1)
            if definition is None:
                continue  # a deleted segment's bit: its removal follows
            sink.add(key, email_update_record(
                segment_id=definition.id, version=definition.version, customer_id=customer_id,
                email=email, previous_email=previous_email, changed_at=self._changed_at,
                cause_event_id=cause_event_id))
            self._stats.email_updates += 1

    def _segment_records(self, slot: int, reason: str) -> SegmentRecords | None:
        """Records of the segment behind a bit (live, or deleted: a tombstone) in this batch."""
        definition = self._by_slot.get(slot)
        if definition is not None:
            return SegmentRecords(definition.id, definition.version, self._changed_at, reason)
        tomb = self._tombstones.get(slot)
        if tomb is not None:
            return SegmentRecords(tomb[0], tomb[1], self._changed_at, "segment_deleted")
        return None
