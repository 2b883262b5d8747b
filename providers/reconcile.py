"""Reconcile: make a provider list or segment hold exactly a segment's members.

The sync worker keeps providers in step change by change; reconcile repairs drift
after the fact (someone edited the list by hand, a change was dead-lettered and
the cause fixed). It takes the segment's members as a provider sees them (``SegmentEmails``,
read by the runtime from the processor's state), compares their emails with what the
provider holds, adds the missing and takes out the extra (out of the
segment or tag, or off the list when none is named; never unsubscribing), and says
what it changed.

Who the provider holds is read with ``client.list_members(list_id, segment_id)``
unless the caller passes ``read_provider``: a coroutine function answering the
emails now in the list (or segment or tag).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from providers.base import BatchResult, Member, ProviderClient
from providers.batching import Target

ProviderReader = Callable[[], Awaitable[set[str]]]


@dataclass
class ReconcileResult:
    """What reconcile changed (or, with ``dry_run``, would change)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # email -> provider's reason
    without_email: list[str] = field(default_factory=list)  # members that cannot be sent

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True)
class SegmentEmails:
    """A segment's members as a provider sees them: emails, and who has none."""

    emails: set[str]
    without_email: list[str]


def drift(desired: Iterable[str], actual: Iterable[str]) -> tuple[list[str], list[str]]:
    """(missing at the provider, extra at the provider); emails compare case-insensitively."""
    want = {e.strip().lower(): e for e in desired}
    have = {e.strip().lower(): e for e in actual}
    missing = sorted(want[k] for k in want.keys() - have.keys())
    extra = sorted(have[k] for k in have.keys() - want.keys())
    return missing, extra


async def reconcile(
    client: ProviderClient,
    target: Target,
    members: SegmentEmails,
    read_provider: ProviderReader | None = None,
    *,
    dry_run: bool = False,
) -> ReconcileResult:
    """Add the missing, remove the extra; return what changed.

    ``read_provider`` defaults to ``client.list_members(target.list_id, target.segment_id)``.
    """
    if read_provider is None:
        actual = await client.list_members(target.list_id, target.segment_id)
    else:
        actual = await read_provider()
    missing, extra = drift(members.emails, actual)
    result = ReconcileResult(without_email=list(members.without_email))
    if dry_run:
        result.added, result.removed = missing, extra
        return result
    if missing:
        added = await client.upsert_members(target.list_id, [Member(e) for e in missing],
                                            target.segment_id)
        _record(result, result.added, added)
    if extra:
        if target.segment_id is not None:
            removed = await client.remove_from_segment(target.list_id, target.segment_id, extra)
        else:
            removed = await client.remove_from_list(target.list_id, extra)
        _record(result, result.removed, removed)
    return result


def _record(result: ReconcileResult, into: list[str], batch: BatchResult) -> None:
    into.extend(batch.succeeded)
    result.failed.update({e: f.reason for e, f in batch.failed.items()})
