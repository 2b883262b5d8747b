"""What the engine has done since it started: counters shown by the demo and the metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStats:
    """Monotonic counters of one processor's engine."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    forwarded: int = 0
    added: int = 0
    removed: int = 0
    email_updates: int = 0
    """`segment.member_updated` records: a member's email set or changed."""
    batches: int = 0
    backfilled: int = 0
    """Membership changes emitted by backfills."""
    applied_during_backfill: int = 0
    timers_fired: int = 0
    """Due timers whose customer was re-evaluated."""
    time_changes: int = 0
    """Membership changes emitted by fired timers."""
    timer_lateness_ms: int = 0
    """The lateness of the latest chunk's most overdue timer: when it fired less when it was
    due."""
