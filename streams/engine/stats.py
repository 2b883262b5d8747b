"""What the engine has done since it started: counters shown by the demo and the metrics.

The counters are plain integers and dicts the engine bumps once per batch or per rare event
(a duplicate, a dead letter); `streams.ops.metrics` reads them when Prometheus scrapes. What
must be observed as it happens (a batch's duration, the acknowledgement of its records, a timer
chunk's lateness) goes to an `EngineObserver`, called once per batch or chunk, never per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class EngineStats:
    """Monotonic counters of one processor (kept across its restarts)."""

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
    timers_scheduled: int = 0
    """Timers set (a customer's next re-evaluation written with its state)."""
    time_changes: int = 0
    """Membership changes emitted by fired timers."""
    kafka_errors: int = 0
    """Consumer-group offset commits the broker refused or did not answer (Redis holds the
    applied offsets: only lag tools see them late)."""
    timer_lateness_ms: int = 0
    """The lateness of the latest chunk's most overdue timer: when it fired less when it was
    due."""
    applied_by_type: dict[str, int] = field(default_factory=dict)
    """Events applied, by event type (counted per chunk of a batch)."""
    duplicates_by_type: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    """Dead letters by reason code (`invalid_json`, `wrong_topic`, ...)."""
    changes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """Membership changes by (segment id, reason, `added`|`removed`)."""


class EngineObserver(Protocol):
    """Told of what is observed as it happens; called per batch or chunk, never per event."""

    def batch_applied(self, events: int, seconds: float) -> None:
        """A batch of `events` records was applied in `seconds` (CPU and Redis loads)."""

    def changes_acknowledged(self, seconds: float) -> None:
        """The broker acknowledged a batch's membership records `seconds` after the oldest
        input record of the batch was stamped (its record timestamp)."""

    def timers_fired(self, count: int, lateness_seconds: float) -> None:
        """A chunk of `count` due timers fired, the most overdue `lateness_seconds` late."""


class NoObserver:
    """An `EngineObserver` that keeps nothing (tests, benchmarks)."""

    def batch_applied(self, events: int, seconds: float) -> None:
        pass

    def changes_acknowledged(self, seconds: float) -> None:
        pass

    def timers_fired(self, count: int, lateness_seconds: float) -> None:
        pass
